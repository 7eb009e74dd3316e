"""Optional Weights & Biases logging that cannot fail a run.

W&B start-up waits at most ``init_timeout`` seconds. W&B runs offline unless
the config says otherwise, so it needs no network and no account. Every call is
guarded: an import error, a failed ``init`` or a failed ``log`` turns into one
warning in the run log and the experiment goes on.
``finish`` is always called, also when the job raises.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class ExperimentTracker:
    """Thin wrapper over a W&B run.

    Parameters
    ----------
    enabled : bool
        When False every method does nothing.
    mode : str
        ``"offline"`` (default), ``"online"`` or ``"disabled"``.
    project, entity, name : str or None
        W&B run identity.
    run_dir : Path
        Where the offline run files go (``run_dir / "wandb"``).
    config : dict
        Resolved experiment config, stored with the W&B run.
    init_timeout : float
        Seconds W&B may take to start before the run goes on without it.
    """

    def __init__(
        self,
        enabled: bool,
        mode: str,
        project: str,
        entity: str | None,
        name: str | None,
        run_dir: Path,
        config: dict[str, Any],
        init_timeout: float = 60.0,
    ):
        self.run = None
        if not enabled or mode == "disabled":
            return
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                project=project,
                entity=entity,
                name=name,
                mode=mode,
                dir=str(run_dir),
                config=config,
                reinit="finish_previous",
                settings=wandb.Settings(init_timeout=init_timeout, console="off"),
            )
            logger.info("W&B run %s (%s) in %s", self.run.id, mode, run_dir / "wandb")
        except Exception as error:  # noqa: BLE001 - W&B must never fail the run
            logger.warning("W&B logging disabled, init failed: %s", error)
            self.run = None

    def log(self, values: dict[str, Any]) -> None:
        """Log scalar values; a failure only warns."""
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in values.items() if v is not None})
        except Exception as error:  # noqa: BLE001
            logger.warning("W&B log failed: %s", error)

    def save_table(self, key: str, frame) -> None:
        """Log a pandas DataFrame as a W&B table; a failure only warns."""
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({key: wandb.Table(dataframe=frame)})
        except Exception as error:  # noqa: BLE001
            logger.warning("W&B table %s failed: %s", key, error)

    def finish(self, exit_code: int = 0) -> None:
        """Close the W&B run, marking it failed when ``exit_code`` is non-zero."""
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as error:  # noqa: BLE001
            logger.warning("W&B finish failed: %s", error)
        finally:
            self.run = None
