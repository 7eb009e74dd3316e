"""Run one BAAF experiment (or a Hydra multirun sweep of them).

Examples
--------
python run.py                                   # embedded synthetic default
python run.py dataset.root=../shared/data/mvtec_ad dataset.category=bottle
python run.py detector=patchcore baaf.votes=3 baaf.bags=4
python run.py -m baaf.bags=2,4 baaf.votes=1,3
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from baaf.runner import INPUT_ERRORS, run_experiment

logger = logging.getLogger("run")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run the experiment in Hydra's output folder; return the image AUROC."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run_experiment(cfg, run_dir)
    except INPUT_ERRORS:
        # run_experiment has logged the message; exiting here keeps Hydra from
        # printing the traceback after it.
        raise SystemExit(1) from None
    print((run_dir / "results.txt").read_text())
    print(f"run folder: {run_dir}")
    return metrics.get("image_auroc")


if __name__ == "__main__":
    main()
