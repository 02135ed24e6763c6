"""Chat-template formatting with the model's own template; loss on the response tokens only."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from fedloom.data.schema import InstructionRecord

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    """``IGNORE_INDEX`` on prompt tokens; the token ids on response tokens."""
    truncated: bool


@dataclass
class TokenizeReport:
    kept: int = 0
    truncated: int = 0
    dropped: int = 0
    """Examples whose prompt alone filled ``max_seq_len`` (no response token left to learn)."""


def prompt_text(tokenizer: PreTrainedTokenizerBase, record: InstructionRecord) -> str:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": record.prompt()}], tokenize=False, add_generation_prompt=True
    )
    return str(text)


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, record: InstructionRecord, max_seq_len: int
) -> TokenizedExample | None:
    """Token ids and labels of one example, or None when the prompt leaves no room for a response.

    The prompt (system + user turn + assistant header) and the response (with the template's
    end-of-turn) are tokenised separately, so the label mask falls exactly on the boundary.
    """
    prompt = prompt_text(tokenizer, record)
    full = str(
        tokenizer.apply_chat_template(
            [
                {"role": "user", "content": record.prompt()},
                {"role": "assistant", "content": record.response},
            ],
            tokenize=False,
        )
    )
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the prompt as a prefix of the dialogue")
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    ids = (p_ids + r_ids)[:max_seq_len]
    labels = ([IGNORE_INDEX] * len(p_ids) + r_ids)[:max_seq_len]
    if all(lab == IGNORE_INDEX for lab in labels):
        return None
    return TokenizedExample(ids, labels, truncated=len(p_ids) + len(r_ids) > max_seq_len)


def tokenize_all(
    tokenizer: PreTrainedTokenizerBase, records: list[InstructionRecord], max_seq_len: int
) -> tuple[list[TokenizedExample], list[InstructionRecord], TokenizeReport]:
    """Tokenise records; returns the kept examples, their records and what was cut or dropped."""
    report = TokenizeReport()
    out, kept = [], []
    for r in records:
        ex = tokenize_example(tokenizer, r, max_seq_len)
        if ex is None:
            report.dropped += 1
            continue
        report.kept += 1
        report.truncated += int(ex.truncated)
        out.append(ex)
        kept.append(r)
    return out, kept, report


def collate(examples: list[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest example."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
