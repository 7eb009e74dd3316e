"""Tests for archive verification and safe extraction in scripts/download.py.

No test touches the network: the fetch function is replaced by a local copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def download():
    spec = importlib.util.spec_from_file_location(
        "download_script", REPO_ROOT / "scripts" / "download.py"
    )
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def add_link(path: Path, name: str, target: str, symbolic: bool = True) -> Path:
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE if symbolic else tarfile.LNKTYPE
        info.linkname = target
        archive.addfile(info)
    return path


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def local_fetch(source: Path, calls: list[str]):
    def fetch(url: str, target: Path) -> None:
        calls.append(url)
        shutil.copyfile(source, target)

    return fetch


def test_registry_has_official_sources(download):
    assert set(download.ARCHIVES) == {"mvtec_ad", "mvtec_loco", "visa", "ucsd_ped2"}
    for archive in download.ARCHIVES.values():
        assert archive.url.startswith(("https://", "http://"))
        algorithm, digest = archive.checksum.split(":")
        assert len(digest) == hashlib.new(algorithm).digest_size * 2


def test_download_verifies_and_extracts(download, tmp_path):
    source = make_tar(tmp_path / "src.tar.gz", {"cat/train/good/000.png": b"x"})
    archive = download.Archive(
        "toy", "https://example.invalid/toy.tgz", "toy.tgz", sha256(source)
    )
    calls: list[str] = []
    root = download.download(
        "toy",
        tmp_path / "data",
        fetch=local_fetch(source, calls),
        archives={"toy": archive},
    )
    assert root == tmp_path / "data" / "toy"
    assert (root / "cat" / "train" / "good" / "000.png").read_bytes() == b"x"
    assert calls == ["https://example.invalid/toy.tgz"]

    download.download(
        "toy",
        tmp_path / "data",
        fetch=local_fetch(source, calls),
        archives={"toy": archive},
    )
    assert len(calls) == 1


def test_verified_archive_not_fetched_again(download, tmp_path):
    source = make_tar(tmp_path / "src.tar.gz", {"a.txt": b"a"})
    archive = download.Archive(
        "toy", "https://example.invalid/a", "toy.tgz", sha256(source)
    )
    (tmp_path / "data").mkdir()
    shutil.copyfile(source, tmp_path / "data" / "toy.tgz")
    calls: list[str] = []
    download.obtain_archive(
        archive, tmp_path / "data", fetch=local_fetch(source, calls)
    )
    assert calls == []


def test_checksum_mismatch_deletes_file(download, tmp_path):
    source = make_tar(tmp_path / "src.tar.gz", {"a.txt": b"a"})
    archive = download.Archive(
        "toy", "https://example.invalid/a", "toy.tgz", "md5:" + "0" * 32
    )
    with pytest.raises(download.ChecksumError, match="md5 is .*expected 0+"):
        download.obtain_archive(
            archive, tmp_path / "data", fetch=local_fetch(source, [])
        )
    assert list((tmp_path / "data").iterdir()) == []


def test_manual_archive_used(download, tmp_path):
    source = make_tar(tmp_path / "src.tar.gz", {"a.txt": b"a"})
    archive = download.Archive(
        "toy", "https://example.invalid/a", "toy.tgz", sha256(source)
    )

    def no_fetch(url: str, target: Path) -> None:
        raise AssertionError("the manual archive should have been used")

    path = download.obtain_archive(archive, tmp_path / "data", no_fetch, source=source)
    assert path.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_tar_path_traversal_rejected(download, tmp_path, name):
    archive = make_tar(tmp_path / "bad.tar.gz", {"ok.txt": b"ok", name: b"evil"})
    with pytest.raises(download.UnsafeArchiveError, match="outside"):
        download.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "ok.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_tar_link_inside_allowed(download, tmp_path):
    path = tmp_path / "link.tar"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("data/b.txt")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"b"))
        link = tarfile.TarInfo("data/sub/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "../b.txt"
        archive.addfile(link)
    download.safe_extract(path, tmp_path / "out")
    assert (tmp_path / "out" / "data" / "sub" / "link").read_bytes() == b"b"


@pytest.mark.parametrize(
    ("target", "symbolic"),
    [("../../etc/passwd", True), ("/etc/passwd", True), ("../outside", False)],
)
def test_tar_escaping_links_rejected(download, tmp_path, target, symbolic):
    archive = add_link(tmp_path / "link.tar", "data/link", target, symbolic)
    with pytest.raises(download.UnsafeArchiveError):
        download.safe_extract(archive, tmp_path / "out")


def test_zip_traversal_rejected(download, tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok.txt", b"ok")
        archive.writestr("../evil.txt", b"evil")
    with pytest.raises(download.UnsafeArchiveError, match="evil"):
        download.safe_extract(path, tmp_path / "out")


def test_zip_extracted(download, tmp_path):
    path = tmp_path / "good.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("clips/Train001/001.tif", b"frame")
    download.safe_extract(path, tmp_path / "out")
    assert (
        tmp_path / "out" / "clips" / "Train001" / "001.tif"
    ).read_bytes() == b"frame"


def test_non_archive_rejected(download, tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("not an archive")
    with pytest.raises(ValueError, match="neither a tar nor a zip"):
        download.safe_extract(path, tmp_path / "out")


def test_ped2_root_located(download, tmp_path):
    files = {"UCSD_Anomaly_Dataset.v1p2/UCSDped2/Train/Train001/001.tif": b"f"}
    source = make_tar(tmp_path / "ucsd.tar.gz", files)
    archive = download.Archive(
        "ucsd_ped2", "https://example.invalid/u", "u.tgz", sha256(source)
    )
    root = download.download(
        "ucsd_ped2",
        tmp_path / "data",
        fetch=local_fetch(source, []),
        archives={"ucsd_ped2": archive},
    )
    assert root == tmp_path / "data" / "ucsd_ped2" / "UCSD_Anomaly_Dataset.v1p2"


def test_unknown_dataset_rejected(download, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        download.download("imagenet", tmp_path)
