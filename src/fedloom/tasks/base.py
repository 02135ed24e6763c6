"""The task interface: what a run trains on and how it is scored.

A task declares the records it trains on (and converts others it accepts), its training
objective, its held-out evaluator, and the names its metrics take in ``metrics.jsonl`` and
``summary.json``. The round loop, sampling, aggregation, checkpointing and both engines are
shared; adding a task is one new file in this folder with ``@register_task``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from fedloom.errors import FedloomError

if TYPE_CHECKING:
    import torch
    from peft import PeftModel

    from fedloom.data.federated import FederatedData
    from fedloom.data.schema import Record
    from fedloom.settings import TrainConfig
    from fedloom.train.objectives import Objective


class TaskError(FedloomError, ValueError):
    """A record or source does not fit the run's task."""


class Evaluator(Protocol):
    """Scores the model as currently loaded (or the base model, adapter disabled, when
    ``base``) on the held-out split; returns metrics with ``"all"`` the task's loss."""

    def __call__(self, base: bool = False) -> dict[str, float]: ...


@dataclass(frozen=True)
class EvalSetup:
    """What a task's held-out evaluator works on: the (LoRA) model as loaded, the run's data
    (its held-out split), the pad id, device and autocast dtype, the examples per domain and
    batch size (`eval.*`) and the training settings (DPO's β)."""

    model: PeftModel
    data: FederatedData
    pad_id: int
    device: torch.device
    autocast_dtype: torch.dtype | None
    max_examples: int
    batch_size: int
    train: TrainConfig
    tokenizer: Any = None
    """The model's tokenizer (tasks that score text continuations need it)."""


class Task:
    name: ClassVar[str]
    schemas: ClassVar[tuple[str, ...]]
    """Source schemas (:data:`fedloom.data.schema.SCHEMAS`) this task can train on."""
    heldout_suite: ClassVar[str]
    """`fedloom eval --suite NAME --config RUN.yaml` that scores the run's held-out split the
    way the run does (``heldout``, ``preference``)."""
    heldout_what: ClassVar[str]
    """What the held-out evaluation measures, for messages (``loss``, ``preference``)."""
    metrics_key: ClassVar[str]
    """Key of the evaluator's full result in a ``metrics.jsonl`` row."""
    summary_key: ClassVar[str | None] = None
    """``summary.json`` keys ``base_<key>`` / ``final_<key>`` for the evaluator's full result
    when it is more than a loss per domain (DPO's preference metrics); None: the result is the
    loss per domain (``base_eval_loss`` / ``final_eval_loss``)."""

    def to_record(self, record: Record) -> Record:
        """The record this task trains on, or a :class:`TaskError` saying what fits."""
        raise NotImplementedError

    def objective(self, train: TrainConfig) -> Objective:
        raise NotImplementedError

    def evaluator(self, setup: EvalSetup) -> Evaluator:
        raise NotImplementedError

    def summary_fields(self, base: dict[str, float], final: dict[str, float]) -> dict[str, Any]:
        """``summary.json``'s evaluation fields from the base and final evaluator results:
        always ``base_eval_loss`` / ``final_eval_loss`` (the task's loss, overall and per
        domain where the task has one), plus ``base_<summary_key>`` / ``final_<summary_key>``."""
        if self.summary_key is None:
            return {"base_eval_loss": base, "final_eval_loss": final}
        return {
            "base_eval_loss": {"all": base["all"]},
            "final_eval_loss": {"all": final["all"]},
            f"base_{self.summary_key}": base,
            f"final_{self.summary_key}": final,
        }


TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} is already registered")
    TASKS[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise TaskError(f"`task` is {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name]
