"""Download, verify and extract the public datasets that the suite evaluates on.

Usage::

    python scripts/download.py mvtec_ad --dest data/
    python scripts/download.py mvtec_ad --dest data/ --archive ~/Downloads/mvtec.tar.xz
    python scripts/download.py visa --dest data/        # also prepares data/visa

Each archive is checked against its published checksum before it is extracted,
and extraction rejects members that would land outside the target folder. MVTec
AD and MVTec LOCO AD ask users to accept their licence on the MVTec web site;
``--archive`` uses a file downloaded that way.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import posixpath
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Put the repository first on the path, so that `import datasets` finds this
# suite's package and not Hugging Face Datasets when the script runs directly.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.visa import prepare_visa  # noqa: E402

logger = logging.getLogger(__name__)

EXTRACTED_STAMP = ".extracted"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Archive:
    """A dataset archive and where to get it.

    Attributes
    ----------
    name : str
        Dataset name, a key of ``datasets.LOADERS``.
    url : str
        Official download address.
    filename : str
        File name to save the archive as.
    checksum : str
        ``"<hashlib algorithm>:<hex digest>"`` of the whole archive.
    """

    name: str
    url: str
    filename: str
    checksum: str


# URLs and checksums as published in anomalib's data modules (anomalib 1.x:
# mvtecad.py, visa.py, ucsd_ped.py). NOTE: the MVTec LOCO AD md5 comes from a
# third-party anomalib-style mvtec_loco.py module and was not checked against a
# download.
ARCHIVES = {
    archive.name: archive
    for archive in (
        Archive(
            "mvtec_ad",
            "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/"
            "download/420938113-1629952094/mvtec_anomaly_detection.tar.xz",
            "mvtec_anomaly_detection.tar.xz",
            "sha256:cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        ),
        Archive(
            "mvtec_loco",
            "https://www.mydrive.ch/shares/48237/1b9106ccdfbb09a0c414bd49fe44a14a/"
            "download/430647091-1646842701/mvtec_loco_anomaly_detection.tar.xz",
            "mvtec_loco_anomaly_detection.tar.xz",
            "md5:d40f092ac6f88433f609583c4a05f56f",
        ),
        Archive(
            "visa",
            "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
            "VisA_20220922.tar",
            "md5:ef908989b6dc701fc218f643c127a4de",
        ),
        Archive(
            "ucsd_ped2",
            "http://www.svcl.ucsd.edu/projects/anomaly/UCSD_Anomaly_Dataset.tar.gz",
            "UCSD_Anomaly_Dataset.tar.gz",
            "md5:5006421b89885f45a6f93b041145f2eb",
        ),
    )
}

Fetch = Callable[[str, Path], None]


class ChecksumError(ValueError):
    """An archive's digest differs from the published one."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder."""


def fetch_url(url: str, target: Path) -> None:
    """Stream ``url`` to ``target`` over HTTP(S)."""
    logger.info("Downloading %s", url)
    with (
        urllib.request.urlopen(url, timeout=TIMEOUT_S) as response,
        target.open("wb") as out,
    ):
        shutil.copyfileobj(response, out, CHUNK_BYTES)


def file_digest(path: Path, algorithm: str) -> str:
    """Return the hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, checksum: str) -> None:
    """Raise ChecksumError unless ``path`` has the ``"<algorithm>:<hex>"`` digest."""
    algorithm, expected = checksum.split(":", 1)
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise ChecksumError(
            f"{path}: {algorithm} is {actual}, expected {expected}; the file is "
            "incomplete or not the official archive, so delete it and download again"
        )


def obtain_archive(
    archive: Archive,
    dest_root: Path,
    fetch: Fetch = fetch_url,
    source: Path | None = None,
) -> Path:
    """Return a verified copy of ``archive`` in ``dest_root``.

    A file already there with the right checksum is reused. Otherwise ``source``
    (a manually downloaded archive) is copied, or ``fetch`` downloads the URL to
    a ``.part`` file that is renamed only after it passes the checksum.

    Raises
    ------
    ChecksumError
        If the new file's digest is wrong; the file is deleted.
    """
    dest_root.mkdir(parents=True, exist_ok=True)
    target = dest_root / archive.filename
    if target.is_file():
        try:
            verify_checksum(target, archive.checksum)
            logger.info("Reusing verified archive %s", target)
            return target
        except ChecksumError:
            logger.warning("Replacing %s, whose checksum is wrong", target)

    partial = target.with_name(f"{target.name}.part")
    if source is not None:
        shutil.copyfile(source, partial)
    else:
        fetch(archive.url, partial)
    try:
        verify_checksum(partial, archive.checksum)
    except ChecksumError:
        partial.unlink()
        raise
    os.replace(partial, target)
    return target


def safe_extract(archive_path: Path, dest: Path) -> None:
    """Extract a tar or zip archive into ``dest``, rejecting unsafe members.

    A member is unsafe when its path is absolute or has a ``..`` component,
    when it is a link whose target leaves ``dest``, or when it is a device or
    FIFO. Every member is checked before anything is written.

    Raises
    ------
    UnsafeArchiveError
        Naming the first unsafe member.
    ValueError
        If the file is neither a tar nor a zip archive.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as archive:
            for name in archive.namelist():
                _check_member_path(archive_path, name)
            archive.extractall(dest)
        return
    if not tarfile.is_tarfile(archive_path):
        raise ValueError(f"{archive_path} is neither a tar nor a zip archive")
    with tarfile.open(archive_path) as archive:
        members = archive.getmembers()
        for member in members:
            _check_tar_member(archive_path, member)
        archive.extractall(dest, members=members, **_tar_filter())


def download(
    name: str,
    dest_root: Path,
    fetch: Fetch = fetch_url,
    source: Path | None = None,
    archives: dict[str, Archive] | None = None,
) -> Path:
    """Obtain, verify and extract one dataset; prepare VisA's layout too.

    The archive is extracted to ``dest_root/<name>`` (``dest_root/visa_raw`` for
    VisA, which is then converted into ``dest_root/visa``). A stamp records the
    extracted checksum, so a second call does nothing.

    Parameters
    ----------
    name : str
        Key of ``archives``.
    dest_root : Path
        Folder for archives and extracted data.
    fetch : callable, default fetch_url
        ``fetch(url, target_path)`` downloads one file; tests pass a local copy.
    source : Path or None, default None
        Manually downloaded archive to use in place of the URL.
    archives : dict or None, default None
        Registry to look ``name`` up in; None uses :data:`ARCHIVES`.

    Returns
    -------
    Path
        The folder to pass as the dataset root: the extraction folder, the
        prepared VisA folder, or for UCSD Ped2 the folder containing
        ``UCSDped2``.
    """
    registry = ARCHIVES if archives is None else archives
    if name not in registry:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(registry)}")
    archive = registry[name]
    dest_root = Path(dest_root)
    extract_dir = dest_root / (f"{name}_raw" if name == "visa" else name)

    stamp = extract_dir / EXTRACTED_STAMP
    if not (stamp.is_file() and stamp.read_text().strip() == archive.checksum):
        path = obtain_archive(archive, dest_root, fetch, source)
        logger.info("Extracting %s to %s", path, extract_dir)
        safe_extract(path, extract_dir)
        stamp.write_text(archive.checksum + "\n")

    if name == "visa":
        raw_root = _find_below(extract_dir, "split_csv/1cls.csv").parent.parent
        prepare_visa(raw_root, dest_root / "visa")
        return dest_root / "visa"
    if name == "ucsd_ped2":
        return _find_below(extract_dir, "UCSDped2").parent
    return extract_dir


def _check_member_path(archive_path: Path, name: str) -> None:
    """Raise for an absolute member name or one with a ``..`` component."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        _raise_outside(archive_path, name)


def _check_link_target(archive_path: Path, name: str, target: str) -> None:
    """Raise when a link target, once normalised, points outside the folder."""
    normal = posixpath.normpath(target)
    if normal.startswith("/") or normal == ".." or normal.startswith("../"):
        _raise_outside(archive_path, name)


def _raise_outside(archive_path: Path, name: str) -> None:
    raise UnsafeArchiveError(
        f"{archive_path}: member {name!r} would be written outside the "
        "extraction folder; the archive is not safe to extract"
    )


def _check_tar_member(archive_path: Path, member: tarfile.TarInfo) -> None:
    _check_member_path(archive_path, member.name)
    if member.isdev() or member.isfifo():
        raise UnsafeArchiveError(
            f"{archive_path}: member {member.name!r} is a device or FIFO; the "
            "archive is not safe to extract"
        )
    if member.issym():
        # A symbolic link resolves from its own folder; an absolute target stays
        # absolute after the join and is rejected.
        target = PurePosixPath(member.name).parent / member.linkname
        _check_link_target(archive_path, member.name, str(target))
    elif member.islnk():
        # A hard link names another member, relative to the archive root.
        _check_member_path(archive_path, member.linkname)


def _tar_filter() -> dict:
    """Return ``filter="data"`` where this Python's tarfile has extraction filters.

    The filters come from PEP 706. The "data" filter also strips setuid bits and
    rejects links that leave the folder, on top of the checks above.
    """
    return {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _find_below(extract_dir: Path, relative: str) -> Path:
    """Return ``extract_dir/[*/[*/]]relative``, the shallowest match first."""
    for depth in range(3):
        matches = sorted(extract_dir.glob("/".join(["*"] * depth + [relative])))
        if matches:
            return matches[0]
    raise FileNotFoundError(
        f"{relative} not found under {extract_dir}; the archive did not extract "
        "as expected, so delete the folder and run again"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(ARCHIVES), help="dataset to download")
    parser.add_argument(
        "--dest",
        type=Path,
        required=True,
        help="folder for archives and extracted data",
    )
    parser.add_argument(
        "--archive",
        type=Path,
        default=None,
        help="use this manually downloaded archive in place of the URL",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the download and return the exit status."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    try:
        root = download(args.name, args.dest, source=args.archive)
    except (OSError, ValueError) as error:
        # Missing or corrupt archives, checksum mismatches and bad layouts: the
        # message names the file and the fix, so a traceback adds nothing.
        logger.error("%s", error)
        return 2
    logger.info("Dataset root for %s: %s", args.name, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
