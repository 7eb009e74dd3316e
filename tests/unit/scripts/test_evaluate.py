"""End-to-end tests of the evaluate command on small files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from baaf.metrics import evaluate

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "scripts" / "evaluate.py"

_spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
evaluate_script = importlib.util.module_from_spec(_spec)
# dataclasses look the module up in sys.modules while the module runs.
sys.modules[_spec.name] = evaluate_script
_spec.loader.exec_module(evaluate_script)

SAMPLE_IDS = ["test/good/000", "test/crack/001", "test/crack/002", "test/good/003"]
LABELS = [0, 1, 1, 0]
IMAGE_SCORES = [0.2, 0.9, 0.6, 0.4]
MASK_SIZE = (40, 60)


def make_masks() -> list[np.ndarray]:
    masks = [np.zeros(MASK_SIZE, dtype=bool) for _ in SAMPLE_IDS]
    masks[1][5:20, 10:30] = True
    masks[2][25:35, 40:55] = True
    return masks


def make_maps() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    maps = []
    for mask in make_masks():
        coarse = mask[::2, ::2].astype(np.float32)
        maps.append(coarse + 0.5 * rng.random(coarse.shape).astype(np.float32))
    return maps


def write_scores(path: Path, with_labels: bool = True) -> Path:
    lines = ["sample_id,image_score" + (",label" if with_labels else "")]
    for sample_id, score, label in zip(SAMPLE_IDS, IMAGE_SCORES, LABELS, strict=True):
        lines.append(f"{sample_id},{score}" + (f",{label}" if with_labels else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def write_gt_csv(root: Path) -> Path:
    lines = ["sample_id,label,mask_path"]
    for index, (sample_id, label, mask) in enumerate(
        zip(SAMPLE_IDS, LABELS, make_masks(), strict=True)
    ):
        mask_path = ""
        if label == 1:
            mask_path = f"masks/{index}.png"
            write_png(root / mask_path, mask)
        lines.append(f"{sample_id},{label},{mask_path}")
    path = root / "gt.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_npz(path: Path) -> Path:
    np.savez(path, **dict(zip(SAMPLE_IDS, make_maps(), strict=True)))
    return path


def expected_metrics() -> dict[str, float]:
    return evaluate(
        np.array(LABELS),
        np.array(IMAGE_SCORES),
        make_maps(),
        make_masks(),
        "full",
        1.0,
        True,
    )


def run_main(argv: list[str], capsys) -> dict:
    assert evaluate_script.main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_npz_and_gt_csv_give_library_metrics(tmp_path, capsys):
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv")),
        "--maps",
        str(write_npz(tmp_path / "maps.npz")),
        "--gt-csv",
        str(write_gt_csv(tmp_path)),
    ]

    metrics = run_main(argv, capsys)
    expected = expected_metrics()

    assert metrics["image_auroc"] == pytest.approx(expected["image_auroc"])
    assert metrics["pixel_auroc"] == pytest.approx(expected["pixel_auroc"])
    assert metrics["pixel_aupro"] == pytest.approx(expected["pixel_aupro"])
    assert metrics["filter_precision"] is None
    assert metrics["filter_recall"] is None


def test_npy_folder_and_mask_folder(tmp_path, capsys):
    maps_dir = tmp_path / "maps"
    masks_dir = tmp_path / "masks"
    for sample_id, anomaly_map, mask in zip(
        SAMPLE_IDS, make_maps(), make_masks(), strict=True
    ):
        (maps_dir / sample_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(maps_dir / f"{sample_id}.npy", anomaly_map)
        if mask.any():
            write_png(masks_dir / f"{sample_id}.png", mask)
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv", with_labels=False)),
        "--maps",
        str(maps_dir),
        "--masks",
        str(masks_dir),
    ]

    metrics = run_main(argv, capsys)
    expected = expected_metrics()

    assert metrics["image_auroc"] == pytest.approx(expected["image_auroc"])
    assert metrics["pixel_aupro"] == pytest.approx(expected["pixel_aupro"])


def test_center_crop_maps_default_crop_fraction(tmp_path, capsys):
    maps = {sample_id: np.ones((28, 28), np.float32) for sample_id in SAMPLE_IDS}
    np.savez(tmp_path / "maps.npz", **maps)
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv")),
        "--maps",
        str(tmp_path / "maps.npz"),
        "--gt-csv",
        str(write_gt_csv(tmp_path)),
        "--map-frame",
        "center_crop",
    ]

    metrics = run_main(argv, capsys)

    assert metrics["pixel_auroc"] == pytest.approx(0.5)


def test_image_level_only_without_masks(tmp_path, capsys):
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv")),
        "--maps",
        str(write_npz(tmp_path / "maps.npz")),
    ]

    metrics = run_main(argv, capsys)

    assert metrics["image_auroc"] == 1.0
    assert metrics["pixel_auroc"] is None
    assert metrics["pixel_aupro"] is None


def test_filter_ids_and_out_file(tmp_path, capsys):
    (tmp_path / "removed.txt").write_text("train/a\ntrain/b\n")
    (tmp_path / "injected.txt").write_text("train/a\ntrain/c\ntrain/d\n\n")
    out = tmp_path / "result" / "metrics.json"
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv")),
        "--removed-ids",
        str(tmp_path / "removed.txt"),
        "--injected-ids",
        str(tmp_path / "injected.txt"),
        "--out",
        str(out),
    ]

    assert evaluate_script.main(argv) == 0
    metrics = json.loads(out.read_text())

    assert capsys.readouterr().out == ""
    assert metrics["filter_precision"] == pytest.approx(1 / 2)
    assert metrics["filter_recall"] == pytest.approx(1 / 3)


def test_undefined_metric_is_null(tmp_path, capsys):
    scores = tmp_path / "scores.csv"
    scores.write_text("sample_id,image_score,label\na,0.1,0\nb,0.2,0\n")

    metrics = run_main(["--scores", str(scores)], capsys)

    assert metrics["image_auroc"] is None


def test_missing_map_id_names_file(tmp_path, caplog):
    maps = dict(zip(SAMPLE_IDS[:3], make_maps()[:3], strict=True))
    np.savez(tmp_path / "maps.npz", **maps)
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv")),
        "--maps",
        str(tmp_path / "maps.npz"),
    ]

    assert evaluate_script.main(argv) == 2
    assert "maps.npz has no entry for 'test/good/003'" in caplog.text


def test_extra_gt_id_names_file(tmp_path, caplog):
    gt_csv = write_gt_csv(tmp_path)
    gt_csv.write_text(gt_csv.read_text() + "test/extra/009,0,\n")
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv")),
        "--gt-csv",
        str(gt_csv),
    ]

    assert evaluate_script.main(argv) == 2
    assert "gt.csv has entries for 'test/extra/009'" in caplog.text


def test_wrong_map_shape_names_sample(tmp_path, caplog):
    maps = dict(zip(SAMPLE_IDS, make_maps(), strict=True))
    maps[SAMPLE_IDS[2]] = np.zeros((1, 20, 30), np.float32)
    np.savez(tmp_path / "maps.npz", **maps)
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv")),
        "--maps",
        str(tmp_path / "maps.npz"),
    ]

    assert evaluate_script.main(argv) == 2
    assert "map of 'test/crack/002' has shape (1, 20, 30)" in caplog.text


def test_disagreeing_labels_are_rejected(tmp_path, caplog):
    scores = write_scores(tmp_path / "scores.csv")
    scores.write_text(
        scores.read_text().replace("test/good/003,0.4,0", "test/good/003,0.4,1")
    )
    argv = ["--scores", str(scores), "--gt-csv", str(write_gt_csv(tmp_path))]

    assert evaluate_script.main(argv) == 2
    assert "disagree for 'test/good/003'" in caplog.text


def test_anomalous_without_mask_path_is_rejected(tmp_path, caplog):
    gt_csv = write_gt_csv(tmp_path)
    gt_csv.write_text(gt_csv.read_text().replace("masks/1.png", ""))
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv")),
        "--gt-csv",
        str(gt_csv),
    ]

    assert evaluate_script.main(argv) == 2
    assert "'test/crack/001' has no mask_path" in caplog.text


def test_anomalous_without_mask_file_is_rejected(tmp_path, caplog):
    masks_dir = tmp_path / "masks"
    write_png(masks_dir / f"{SAMPLE_IDS[1]}.png", make_masks()[1])
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv")),
        "--masks",
        str(masks_dir),
    ]

    assert evaluate_script.main(argv) == 2
    assert "002.png of anomalous sample 'test/crack/002' not found" in caplog.text


def test_missing_labels_are_rejected(tmp_path, caplog):
    argv = ["--scores", str(write_scores(tmp_path / "scores.csv", with_labels=False))]

    assert evaluate_script.main(argv) == 2
    assert "has no label column" in caplog.text


def test_bad_score_names_sample(tmp_path, caplog):
    scores = tmp_path / "scores.csv"
    scores.write_text("sample_id,image_score,label\na,0.1,0\nb,high,1\n")

    assert evaluate_script.main(["--scores", str(scores)]) == 2
    assert "image_score is missing, not a number or infinite for 'b'" in caplog.text


def test_command_runs_as_script(tmp_path):
    argv = [
        "--scores",
        str(write_scores(tmp_path / "scores.csv")),
        "--maps",
        str(write_npz(tmp_path / "maps.npz")),
        "--gt-csv",
        str(write_gt_csv(tmp_path)),
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    metrics = json.loads(completed.stdout)
    assert metrics["pixel_aupro"] == pytest.approx(expected_metrics()["pixel_aupro"])
