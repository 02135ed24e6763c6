"""The one record schema for instruction data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
