"""TensorBoard: event files in ``<run>/tensorboard/`` (``tensorboard --logdir runs/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fedloom.tracking.base import Tracker, register_tracker


@register_tracker("tensorboard")
class TensorBoardTracker(Tracker):
    package = "tensorboard"

    def start(self, run_name: str, params: dict[str, Any], resume_id: str | None) -> str | None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.out / "tensorboard"))
        self.step = 0
        text = yaml.safe_dump(params, sort_keys=True)
        self.writer.add_text("config", "```\n" + text + "```", 0)
        return None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.step = step
        self.writer.flush()

    def finish(self, summary: dict[str, float], artifacts: list[Path]) -> None:
        for k, v in summary.items():
            self.writer.add_scalar(f"summary/{k}", v, self.step)
        self.writer.close()
