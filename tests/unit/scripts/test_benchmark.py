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


def test_benchmark_rejects_zero_repeats(capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.parse_args(["--repeats", "0"])
    assert stop.value.code == 2
    assert "--repeats must be at least 1, got 0" in capsys.readouterr().err
