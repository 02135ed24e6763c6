"""``task: dpo`` — direct preference optimisation (Rafailov et al. 2023) on preference pairs,
sigmoid loss with β = ``train.beta``; the reference is the base model with the adapter disabled.
Held-out: preference accuracy, reward accuracy and margin, chosen log-likelihood, DPO loss."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedloom.tasks.base import EvalSetup, Evaluator, Task, TaskError, register_task

if TYPE_CHECKING:
    from fedloom.data.schema import Record
    from fedloom.settings import TrainConfig
    from fedloom.train.objectives import Objective


@register_task
class DPO(Task):
    name = "dpo"
    schemas = ("preference",)
    heldout_suite = "preference"
    heldout_what = "preference"
    metrics_key = "eval_preference"
    summary_key = "preference"

    def to_record(self, record: Record) -> Record:
        from fedloom.data.schema import PreferenceRecord

        if not isinstance(record, PreferenceRecord):
            raise TaskError(
                f"`task: dpo` trains on preference pairs, not {type(record).__name__}s "
                "(use a preference source such as dpo_en, or a local file with schema preference)"
            )
        return record

    def objective(self, train: TrainConfig) -> Objective:
        from fedloom.train.objectives import DPOObjective

        return DPOObjective(train.beta)

    def evaluator(self, setup: EvalSetup) -> Evaluator:
        from fedloom.eval.preference import PreferenceEvaluator

        s = setup
        return PreferenceEvaluator(
            s.model,
            s.data,
            s.pad_id,
            s.device,
            s.autocast_dtype,
            s.max_examples,
            s.batch_size,
            s.train.beta,
        )
