"""The KnowledgeSG method table: the method and its baselines, one registry, each a row saying
who writes the instructions, which examples its prompt shows, who answers, and whether the
professional model filters. Definitions (one line each) are in docs/knowledgesg.md."""

from __future__ import annotations

from dataclasses import dataclass

WRITERS = ("base", "dp", "plain")
"""base: the base model; dp: the base model with the client's DP-trained writer adapter; plain:
the same adapter trained without DP."""
EXAMPLES = ("public", "private", "none", "config")
"""Which examples the writing prompt shows (`config`: `knowledgesg.examples` decides)."""


@dataclass(frozen=True)
class SynthMethod:
    name: str
    summary: str
    writer: str | None
    """None: no synthesis, the final model trains on the private data itself."""
    examples: str = "none"
    show: str = "pair"
    """What each prompt example shows: `pair` (instruction and response) or `instruction`."""
    answers: str = "writer"
    """`writer` (the response the writer wrote with the instruction), `self` (the writer's model
    answers the instruction in a second call) or `professional`."""
    refine: bool = False
    """The professional model rates each instruction and drops those under the threshold."""

    def __post_init__(self) -> None:
        if self.writer is not None and self.writer not in WRITERS:
            raise ValueError(f"{self.name}: writer {self.writer!r} not in {WRITERS}")
        if self.examples not in EXAMPLES or self.show not in ("pair", "instruction"):
            raise ValueError(f"{self.name}: examples {self.examples!r} / show {self.show!r}")
        if self.answers not in ("writer", "self", "professional"):
            raise ValueError(f"{self.name}: answers {self.answers!r}")
        if self.answers == "writer" and self.show != "pair":
            raise ValueError(f"{self.name}: a writer that answers needs pair examples")

    def leaky(self, examples: str) -> bool:
        """Private text leaves the client in the prompts (the original code's behaviour), with
        ``examples`` the config's `knowledgesg.examples` (what a `config` method shows)."""
        return (examples if self.examples == "config" else self.examples) == "private"


KSG_METHODS: dict[str, SynthMethod] = {}


def register_ksg_method(m: SynthMethod) -> SynthMethod:
    if m.name in KSG_METHODS:
        raise ValueError(f"KnowledgeSG method {m.name!r} is already registered")
    KSG_METHODS[m.name] = m
    return m


for _m in (
    SynthMethod(
        "non-private", "fine-tune directly on the private data (no DP, no synthesis)", None
    ),
    SynthMethod(
        "icl",
        "the base model writes pairs from 3 private example pairs in its prompt (LEAKY)",
        "base",
        examples="private",
    ),
    SynthMethod(
        "self-instruct",
        "the base model writes an instruction from 3 public example instructions, then answers it",
        "base",
        examples="public",
        show="instruction",
        answers="self",
    ),
    SynthMethod(
        "self-instruct-icl",
        "as self-instruct, with 3 public example pairs shown to both calls",
        "base",
        examples="public",
        answers="self",
    ),
    SynthMethod("dp-gene", "the DP writer writes whole pairs; kept as written", "dp"),
    SynthMethod(
        "dp-instruct",
        "the DP writer writes an instruction; the DP model answers it",
        "dp",
        show="instruction",
        answers="self",
    ),
    SynthMethod(
        "dp-instruct-icl",
        "as dp-instruct, with 3 public example pairs shown to both calls",
        "dp",
        examples="public",
        answers="self",
    ),
    SynthMethod(
        "ksg",
        "KnowledgeSG without DP: the non-DP writer writes instructions, the professional "
        "filters and answers",
        "plain",
        examples="config",
        show="instruction",
        answers="professional",
        refine=True,
    ),
    SynthMethod(
        "base-ksg",
        "control: the base model (no writer adapter) writes instructions, the professional "
        "filters and answers — what the DP writer adds over KnowledgeSG's other steps",
        "base",
        examples="config",
        show="instruction",
        answers="professional",
        refine=True,
    ),
    SynthMethod(
        "dp-ksg",
        "KnowledgeSG: the DP writer writes instructions, the professional filters and answers",
        "dp",
        examples="config",
        show="instruction",
        answers="professional",
        refine=True,
    ),
):
    register_ksg_method(_m)
