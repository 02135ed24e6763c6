"""``task: sft`` — supervised fine-tuning on instructions and multi-turn conversations: loss on
every assistant token (each assistant turn of a conversation), none on the prompt. Multiple-choice
questions train as instructions (lettered question -> "B. option" + explanation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedloom.tasks.base import EvalSetup, Evaluator, Task, TaskError, register_task

if TYPE_CHECKING:
    from fedloom.data.schema import Record
    from fedloom.settings import TrainConfig
    from fedloom.train.objectives import Objective


@register_task
class SFT(Task):
    name = "sft"
    schemas = ("instruction", "conversation", "multiple_choice")
    heldout_suite = "heldout"
    heldout_what = "loss"
    metrics_key = "eval_loss_by_domain"

    def to_record(self, record: Record) -> Record:
        from fedloom.data.schema import ConversationRecord, as_instruction

        if isinstance(record, ConversationRecord):
            return record
        try:
            return as_instruction(record)
        except TypeError as e:
            raise TaskError(str(e)) from None

    def objective(self, train: TrainConfig) -> Objective:
        from fedloom.train.objectives import SFTObjective

        return SFTObjective(packed=train.packing == "on")

    def evaluator(self, setup: EvalSetup) -> Evaluator:
        from fedloom.eval.heldout import HeldoutEvaluator

        s = setup
        return HeldoutEvaluator(
            s.model, s.data, s.pad_id, s.device, s.autocast_dtype, s.max_examples, s.batch_size
        )
