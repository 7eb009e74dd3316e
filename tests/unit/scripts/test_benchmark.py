"""The benchmark script runs every phase on a small synthetic category."""

from __future__ import annotations

import pytest

from scripts import benchmark


def test_benchmark_times_every_phase(synthetic_root, tmp_path, capsys):
    rows = benchmark.main(
        ["--root", str(synthetic_root), "--category", "tiny", "--ratio", "0.2"]
        + ["--repeats", "1"]
        + ["--cache-dir", str(tmp_path)]
    )
    phases = [row["phase"] for row in rows]
    assert phases == [
        "backbone forward over training images",
        "PatchCore training",
        "BAAF(1/4) + PatchCore training",
        "BAAF(3/4) + PatchCore training",
        "PatchCore inference per test image",
        "BAAF(1/4) + PatchCore inference per test image",
    ]
    assert all(row["seconds"] > 0 and row["peak_mib"] > 0 for row in rows)
    table = capsys.readouterr().out
    assert "| PatchCore training |" in table
    assert "1.00x" in table


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["--ratio", "1.5"], "--ratio must be in [0, 1), got 1.5"),
        (["--coreset-ratio", "0"], "--coreset-ratio must be in (0, 1], got 0.0"),
        (["--layers", "2,x"], "--layers must be integers separated by commas"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
    ],
)
def test_benchmark_rejects_invalid_arguments(arguments, message, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.parse_args(arguments)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_benchmark_missing_root_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit, match="root folder not found: .*nowhere"):
        benchmark.main(["--root", str(missing), "--cache-dir", str(tmp_path)])


def test_benchmark_invalid_layers_named(synthetic_root, tmp_path):
    with pytest.raises(SystemExit, match="stages are \\[0, 1, 2, 3, 4\\]"):
        benchmark.main(
            ["--root", str(synthetic_root), "--category", "tiny", "--layers", "2,9"]
            + ["--cache-dir", str(tmp_path)]
        )
