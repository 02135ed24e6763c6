"""Stage 3: the generation prompt (task statement, k examples, the piece, an output slot)."""

from __future__ import annotations

from typing import Any

from fedloom.synth.common import (
    cut_words,
)

# --- stage 3: prompts -------------------------------------------------------------------------

TASK = (
    "You turn a passage of text into one instruction-response pair for training an assistant. "
    "The instruction is a question or task a user might ask that the passage answers; the "
    "response answers it fully and correctly, using the passage's facts. Do not mention "
    '"the passage" or "the text" in the instruction.'
)


def build_prompt(piece: str, examples: list[dict[str, Any]], example_words: int = 120) -> str:
    """Task statement, the k examples as text -> instruction -> response (each field cut to
    ``example_words``), the piece, and the output slot, in the marked format
    :func:`parse_output` reads back."""
    parts = [TASK, ""]
    for i, ex in enumerate(examples, 1):
        parts += [
            f"### Example {i}",
            f"Text: {cut_words(ex['text'], example_words)}",
            f"Instruction: {cut_words(ex['instruction'], example_words)}",
            f"Response: {cut_words(ex['response'], example_words)}",
            "",
        ]
    parts += [
        "### Your turn",
        f"Text: {piece}",
        "Write exactly one pair for this text, in the same format:",
        "Instruction: <the instruction>",
        "Response: <the response>",
    ]
    return "\n".join(parts)
