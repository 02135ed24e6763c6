"""Chat-template formatting with the model's own template; loss on the response tokens only.

- instructions: prompt (system + user turn + assistant header) without loss, response with loss;
- conversations: every assistant turn carries loss, no user or system token does; a conversation
  longer than ``max_seq_len`` keeps its leading whole exchanges and counts the turns cut;
- preference pairs: one prompt, two responses (chosen, rejected), for DPO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from fedloom.data.schema import (
    ConversationRecord,
    InstructionRecord,
    PreferenceRecord,
    Record,
)

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    """``IGNORE_INDEX`` on prompt tokens; the token ids on response tokens."""
    truncated: bool
    turns_cut: int = 0
    """Assistant turns of a conversation left out to fit ``max_seq_len``."""


@dataclass
class TokenizeReport:
    kept: int = 0
    truncated: int = 0
    dropped: int = 0
    """Examples whose prompt alone filled ``max_seq_len`` (no response token left to learn)."""
    turns_cut: int = 0
    """Conversations: assistant turns left out (whole turns) to fit ``max_seq_len``."""


def prompt_text(tokenizer: PreTrainedTokenizerBase, record: InstructionRecord) -> str:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": record.prompt()}], tokenize=False, add_generation_prompt=True
    )
    return str(text)


def chat_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, str]]) -> str:
    """What a model is given to answer: a user prompt, or a dialogue ending in a user turn,
    rendered with the chat template up to the assistant header."""
    if isinstance(prompt, str):
        return prompt_text(tokenizer, InstructionRecord(instruction=prompt, response=""))
    return _render(tokenizer, prompt, gen=True)


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


def _render(tokenizer: PreTrainedTokenizerBase, msgs: list[dict[str, str]], gen: bool) -> str:
    return str(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen))


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase, record: ConversationRecord, max_seq_len: int
) -> TokenizedExample | None:
    """Ids and labels of a dialogue: the template is rendered turn by turn, so each assistant
    turn (its content and end-of-turn) is a separately tokenised segment carrying loss, and
    everything between them (user turns, headers) carries none. Whole exchanges are kept while
    they fit; if even the first does not, it is cut at ``max_seq_len``."""
    msgs = record.messages
    segments: list[tuple[list[int], bool]] = []
    done = ""
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, msgs[:k], gen=True)
        full = _render(tokenizer, msgs[: k + 1], gen=False)
        if not (prefix.startswith(done) and full.startswith(prefix)):
            raise ValueError("the chat template does not render earlier turns as a prefix")
        segments.append(
            (tokenizer(prefix[len(done) :], add_special_tokens=False)["input_ids"], False)
        )
        segments.append(
            (tokenizer(full[len(prefix) :], add_special_tokens=False)["input_ids"], True)
        )
        done = full
    ids: list[int] = []
    labels: list[int] = []
    n_turns = len(segments) // 2
    kept = 0
    for t in range(n_turns):
        (p_ids, _), (r_ids, _) = segments[2 * t], segments[2 * t + 1]
        if len(ids) + len(p_ids) + len(r_ids) > max_seq_len and kept > 0:
            break
        ids += p_ids + r_ids
        labels += [IGNORE_INDEX] * len(p_ids) + r_ids
        kept += 1
    truncated = len(ids) > max_seq_len or kept < n_turns
    ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    if all(lab == IGNORE_INDEX for lab in labels):
        return None
    return TokenizedExample(ids, labels, truncated, turns_cut=n_turns - kept)


@dataclass
class TokenizedPair:
    """A preference pair: the shared prompt and the two responses (each with end-of-turn)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, record: PreferenceRecord, max_seq_len: int
) -> TokenizedPair | None:
    """Prompt (history + user turn + assistant header) and both responses. Too long: the prompt
    keeps its last ``max_seq_len // 2`` tokens, then responses are cut to the room left."""
    msgs = [*record.history, {"role": "user", "content": record.prompt}]
    prompt = _render(tokenizer, msgs, gen=True)
    resp = []
    for answer in (record.chosen, record.rejected):
        full = _render(tokenizer, [*msgs, {"role": "assistant", "content": answer}], gen=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the prompt as a prefix")
        resp.append(tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"])
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    longest = len(p_ids) + max(len(r) for r in resp)
    if longest > max_seq_len:
        p_ids = p_ids[-(max_seq_len // 2) :] if len(p_ids) > max_seq_len // 2 else p_ids
        room = max_seq_len - len(p_ids)
        resp = [r[:room] for r in resp]
    if not resp[0] or not resp[1]:
        return None
    return TokenizedPair(p_ids, resp[0], resp[1], truncated=longest > max_seq_len)


def tokenize_record(
    tokenizer: PreTrainedTokenizerBase, record: Record, max_seq_len: int
) -> TokenizedExample | TokenizedPair | None:
    if isinstance(record, ConversationRecord):
        return tokenize_conversation(tokenizer, record, max_seq_len)
    if isinstance(record, PreferenceRecord):
        return tokenize_pair(tokenizer, record, max_seq_len)
    if isinstance(record, InstructionRecord):
        return tokenize_example(tokenizer, record, max_seq_len)
    raise TypeError(f"cannot tokenise a {type(record).__name__} for training")


def tokenize_all(
    tokenizer: PreTrainedTokenizerBase, records: list[Any], max_seq_len: int
) -> tuple[list[Any], list[Any], TokenizeReport]:
    """Tokenise records; returns the kept examples, their records and what was cut or dropped."""
    report = TokenizeReport()
    out, kept = [], []
    for r in records:
        ex = tokenize_record(tokenizer, r, max_seq_len)
        if ex is None:
            report.dropped += 1
            continue
        report.kept += 1
        report.truncated += int(ex.truncated)
        if isinstance(ex, TokenizedExample):
            report.turns_cut += ex.turns_cut
        out.append(ex)
        kept.append(r)
    return out, kept, report


def collate_pairs(pairs: list[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen sequences (rows 0..B-1) then rejected ones (rows B..2B-1), right-padded; labels
    mask the prompt."""
    rows = [
        TokenizedExample(
            p.prompt_ids + r, [IGNORE_INDEX] * len(p.prompt_ids) + r, truncated=p.truncated
        )
        for r_side in ("chosen_ids", "rejected_ids")
        for p in pairs
        for r in [getattr(p, r_side)]
    ]
    return collate(rows, pad_id)


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


def collate_packed(examples: list[TokenizedExample]) -> dict[str, torch.Tensor]:
    """A micro-batch packed into one row with no padding: the examples' tokens back to back,
    ``position_ids`` restarting at 0 for each example (the packed attention of
    :mod:`fedloom.train.packing` runs each example's slice alone; transformers' own attention
    builds a block-diagonal causal mask from them), and labels with each example's first token
    ignored (it must not be predicted from the previous example)."""
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for e in examples:
        ids += e.input_ids
        labels += [IGNORE_INDEX, *e.labels[1:]]
        positions += range(len(e.input_ids))
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([positions], dtype=torch.long),
    }
