"""Record schemas: every source maps into one of these, keeping its labels in ``metadata``.

| schema           | record                    | fields                                        | used by          |
|------------------|---------------------------|-----------------------------------------------|------------------|
| instruction      | :class:`InstructionRecord`    | instruction, input, response              | SFT              |
| conversation     | :class:`ConversationRecord`   | messages (role, content)                  | multi-turn SFT   |
| preference       | :class:`PreferenceRecord`     | prompt, chosen, rejected                  | DPO              |
| multiple_choice  | :class:`MultipleChoiceRecord` | question, choices, answer (index), subject | MC suites; SFT via :func:`as_instruction` |
| prompt           | :class:`PromptRecord`         | prompt, category, target                  | generation suites |
| text             | :class:`TextRecord`           | text, source                              | data generation  |

``metadata`` carries the labels splits and evaluation use (``domain``, ``language``,
``subject``, ``category``, ``source``, ``id``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class InstructionRecord:
    """One instruction example. ``metadata`` carries labels used by splits and evaluation,
    e.g. ``{"domain": "math", "source": "gsm8k"}``."""

    instruction: str
    response: str
    input: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def prompt(self) -> str:
        """The user turn: the instruction, followed by the optional input on its own paragraph."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


@dataclass(frozen=True)
class ConversationRecord:
    """A dialogue: ``messages`` are ``{"role": "system"|"user"|"assistant", "content": str}``,
    user and assistant alternating, starting with a user turn (after an optional system one)."""

    messages: list[dict[str, str]]
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class PreferenceRecord:
    """A preference pair: two answers to one prompt, ``chosen`` preferred over ``rejected``.
    ``history`` holds earlier turns (messages) before the prompt, if any."""

    prompt: str
    chosen: str
    rejected: str
    history: list[dict[str, str]] = field(default_factory=list, hash=False, compare=False)
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class MultipleChoiceRecord:
    """A multiple-choice question; ``answer`` indexes ``choices``."""

    id: str
    question: str
    choices: list[str]
    answer: int
    subject: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class PromptRecord:
    """A prompt answered by generation; ``target`` is the reference answer when one exists
    (a final number for GSM8K, a reference text for ROUGE)."""

    id: str
    prompt: str
    target: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def category(self) -> str:
        return str(self.metadata.get("category", ""))


@dataclass(frozen=True)
class TextRecord:
    """A raw, unstructured document."""

    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


Record = (
    InstructionRecord
    | ConversationRecord
    | PreferenceRecord
    | MultipleChoiceRecord
    | PromptRecord
    | TextRecord
)
SCHEMAS: dict[str, type] = {
    "instruction": InstructionRecord,
    "conversation": ConversationRecord,
    "preference": PreferenceRecord,
    "multiple_choice": MultipleChoiceRecord,
    "prompt": PromptRecord,
    "text": TextRecord,
}


def mc_prompt(item: MultipleChoiceRecord) -> str:
    """The question followed by lettered options and the answering instruction."""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
    return f"{item.question}\n\n{options}\n\nAnswer with the letter of the correct option."


def record_prompt(record: Record) -> str | list[dict[str, str]]:
    """What a model is asked when this record's answer is generated: the user prompt, or the
    dialogue up to the first assistant turn (conversations) / the prompt turn (preferences)."""
    if isinstance(record, InstructionRecord):
        return record.prompt()
    if isinstance(record, ConversationRecord):
        k = next(i for i, m in enumerate(record.messages) if m["role"] == "assistant")
        return record.messages[:k]
    if isinstance(record, PreferenceRecord):
        return [*record.history, {"role": "user", "content": record.prompt}]
    if isinstance(record, MultipleChoiceRecord):
        return mc_prompt(record)
    if isinstance(record, PromptRecord):
        return record.prompt
    return record.text


def as_instruction(record: Record) -> InstructionRecord:
    """Records SFT can train on: instructions as they are; a multiple-choice question as its
    lettered prompt answered by "X. option" plus the explanation when the source has one."""
    if isinstance(record, InstructionRecord):
        return record
    if isinstance(record, MultipleChoiceRecord):
        letter = LETTERS[record.answer]
        response = f"{letter}. {record.choices[record.answer]}"
        if record.metadata.get("explanation"):
            response += f"\n\n{record.metadata['explanation']}"
        return InstructionRecord(mc_prompt(record), response, metadata=record.metadata)
    kind = type(record).__name__
    raise TypeError(
        f"a {kind} cannot be used for instruction tuning; "
        + {
            "ConversationRecord": "conversation sources train with `task: sft` (multi-turn)",
            "PreferenceRecord": "preference sources train with `task: dpo`",
            "PromptRecord": "prompt-only sources are for evaluation (they have no responses)",
            "TextRecord": "raw text sources feed data generation, not SFT",
        }.get(kind, "use an instruction source")
    )
