"""``task: classify`` — text classification trained as instructions: the prompt holds the text
and the label set, the response is the label. Trained exactly like SFT (loss on the label
tokens); scored on the held-out split by **label log-likelihood**: each candidate label,
followed by the template's end-of-turn, is scored after the prompt, and the most likely one is
the prediction (a small model's free text rarely matches a label verbatim; the likelihood of
the whole answer, stop included, compares labels of different token lengths fairly).

Records carry ``metadata["label"]`` and ``metadata["labels"]`` (the label set), e.g. the
``mmlu_topics`` source (MMLU questions → their subject group).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedloom.tasks.base import EvalSetup, Evaluator, Task, TaskError, register_task

if TYPE_CHECKING:
    from fedloom.data.schema import Record
    from fedloom.settings import TrainConfig
    from fedloom.train.objectives import Objective


@register_task
class Classify(Task):
    name = "classify"
    schemas = ("instruction",)
    heldout_suite = "classify"
    heldout_what = "accuracy"
    metrics_key = "eval_classify"
    summary_key = "classify"

    def to_record(self, record: Record) -> Record:
        from fedloom.data.schema import InstructionRecord

        meta = getattr(record, "metadata", {})
        if (
            not isinstance(record, InstructionRecord)
            or "label" not in meta
            or not meta.get("labels")
        ):
            raise TaskError(
                "`task: classify` trains on labelled instructions (metadata `label` and `labels`), "
                "e.g. the `mmlu_topics` source"
            )
        if meta["label"] not in meta["labels"] or record.response.strip() != meta["label"]:
            raise TaskError(
                f"record {meta.get('id', '?')}: its response must be its label, one of {meta['labels']}"
            )
        return record

    def objective(self, train: TrainConfig) -> Objective:
        from fedloom.train.objectives import SFTObjective

        return SFTObjective(packed=train.packing == "on")

    def evaluator(self, setup: EvalSetup) -> Evaluator:
        return ClassifyEvaluator(setup)


class ClassifyEvaluator:
    """Held-out loss (per domain, as SFT) plus accuracy by label log-likelihood, overall and per
    true label, on up to ``max_examples`` held-out records per domain."""

    def __init__(self, setup: EvalSetup) -> None:
        from fedloom.eval.heldout import HeldoutEvaluator

        if setup.tokenizer is None:
            raise TaskError("`task: classify` needs the tokenizer in its evaluation setup")
        s = setup
        self.setup = s
        self.loss = HeldoutEvaluator(
            s.model, s.data, s.pad_id, s.device, s.autocast_dtype, s.max_examples, s.batch_size
        )
        self.records = [
            s.data.heldout_records[i]
            for idx in s.data.heldout_by_domain().values()
            for i in idx[: s.max_examples]
        ]

    def __call__(self, base: bool = False) -> dict[str, float]:
        import contextlib

        import torch
        from peft import PeftModel

        out = dict(self.loss(base))
        s = self.setup
        use_base = base and isinstance(s.model, PeftModel)
        ctx: Any = s.model.disable_adapter() if use_base else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            preds = [
                predict_label(s.model, s.tokenizer, r, s.device, s.autocast_dtype)
                for r in self.records
            ]
        truth = [str(r.metadata["label"]) for r in self.records]
        out["accuracy"] = sum(p == t for p, t in zip(preds, truth, strict=True)) / max(
            len(truth), 1
        )
        for lab in sorted(set(truth)):
            idx = [i for i, t in enumerate(truth) if t == lab]
            out[f"accuracy[{lab}]"] = sum(preds[i] == lab for i in idx) / len(idx)
        return out


def predict_label(model: Any, tokenizer: Any, record: Any, device: Any, autocast_dtype: Any) -> str:
    """The label whose answer (label + end-of-turn, as the template renders it) is most likely
    after the record's prompt."""
    from fedloom.data.template import prompt_text
    from fedloom.eval.scoring import score_continuations

    labels = list(record.metadata["labels"])
    prompt = prompt_text(tokenizer, record)
    conts = [answer_text(tokenizer, record, lab, prompt) for lab in labels]
    scores = score_continuations(model, tokenizer, prompt, conts, device, autocast_dtype)
    best = max(range(len(labels)), key=lambda i: (scores[i].logprob, -i))
    return str(labels[best])


def answer_text(tokenizer: Any, record: Any, label: str, prompt: str) -> str:
    """What the template renders after the prompt when the answer is ``label``."""
    full = str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": record.prompt()}, {"role": "assistant", "content": label}],
            tokenize=False,
        )
    )
    return full[len(prompt) :].rstrip("\n")
