"""What a judge is: a kind (how an item becomes judging prompts, how a reply becomes a value)
in one registry, :data:`JUDGE_KINDS`; parsers shared by the kinds; the verdict-first rewrite
of the papers' prompts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from fedloom.errors import FedloomError

Messages = list[dict[str, str]]
Item = Mapping[str, Any]


class JudgeError(FedloomError, ValueError):
    """A judge cannot be used as asked (unknown kind, an item missing a field, unreachable)."""


class JudgeKind:
    """One way of judging. ``prompts`` turns an item into the judge's requests (one, or two for
    both orders of a pair); ``parse`` reads one reply (None: no verdict in it); ``combine``
    turns the parsed replies of an item into its value (None: unjudged, never 0)."""

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    """The item fields the kind needs."""
    higher: ClassVar[str]
    """What a higher value means (shown beside the scores)."""

    def prompts(self, item: Item, reasoning: bool) -> list[Messages]:
        raise NotImplementedError

    def parse(self, reply: str) -> float | None:
        raise NotImplementedError

    def combine(self, parsed: list[float | None]) -> float | None:
        (value,) = parsed
        return value

    def check(self, item_id: str, item: Item) -> None:
        missing = [f for f in self.fields if not isinstance(item.get(f), str)]
        if missing:
            raise JudgeError(
                f"{self.name} judge: item {item_id} has no {missing[0]!r} (it needs "
                f"{', '.join(self.fields)})"
            )


JUDGE_KINDS: dict[str, type[JudgeKind]] = {}
"""Judge kinds by name: `single`, `pairwise`, `reference`, `safety`, `quality`."""


def register_judge(cls: type[JudgeKind]) -> type[JudgeKind]:
    if cls.name in JUDGE_KINDS:
        raise ValueError(f"judge kind {cls.name!r} is already registered")
    JUDGE_KINDS[cls.name] = cls
    return cls


def get_judge_kind(name: str) -> JudgeKind:
    if name not in JUDGE_KINDS:
        raise JudgeError(f"unknown judge {name!r}; choose one of {sorted(JUDGE_KINDS)}")
    return JUDGE_KINDS[name]()


def parse_rating(text: str) -> float | None:
    """The 1-10 rating in a reply: "[[7]]" (FastChat's format), else "[7]", else "Rating: 7";
    None if none is there or it is outside 1..10."""
    for pattern in (
        r"\[\[\s*(\d+\.?\d*)\s*\]\]",
        r"\[\s*(\d+\.?\d*)\s*\]",
        r"[Rr]ating:\s*(\d+\.?\d*)",
    ):
        found = re.findall(pattern, text)
        if found:
            value = float(found[-1])
            return value if 1 <= value <= 10 else None
    return None


def parse_choice(text: str) -> str | None:
    """FastChat's pairwise verdict: the last "[[A]]", "[[B]]" or "[[C]]" (tie); a bare "A"/"B"/
    "C" only when the reply is nothing else."""
    found = re.findall(r"\[\[\s*([ABC])\s*\]\]", text)
    if found:
        return str(found[-1])
    bare = text.strip().strip(".*[]() ").upper()
    return bare if bare in ("A", "B", "C") else None


def rewrite(text: str, swaps: Mapping[str, str]) -> str:
    """``text`` with each phrase replaced; a phrase not found is an error (the prompt it came
    from changed, and the rewrite would silently do nothing)."""
    for old, new in swaps.items():
        if old not in text:
            raise JudgeError(f"judge prompt rewrite: {old[:50]!r}... is not in the prompt")
        text = text.replace(old, new)
    return text


VERDICT_FIRST = {
    "Begin your evaluation by providing a short explanation. ": "",
    "Begin your evaluation by comparing the assistant's answer with the reference answer. "
    "Identify and correct any mistakes. ": "Compare the assistant's answer with the reference "
    "answer. ",
    "Begin your evaluation by comparing the two responses and provide a short explanation. ": "",
    "Begin your evaluation by comparing the responses of the two assistants and provide a short "
    "explanation. ": "",
    "Begin your evaluation by comparing both assistants' answers with the reference answer. "
    "Identify and correct any mistakes. ": "Compare both assistants' answers with the reference "
    "answer. ",
    "After providing your explanation, you must rate": "Do not write an explanation: only rate",
    "After providing your explanation, output your final verdict": "Do not write an "
    "explanation: only output your final verdict",
    'for example: "Rating: [[5]]".': "where rating is a whole number from 1 (wrong or useless) "
    'to 10 (correct and excellent), for example "Rating: [[3]]" or "Rating: [[9]]".',
}
"""FastChat's judge prompts ask for an explanation, then the verdict (hundreds of tokens); on a
CPU the verdict-first form asks for the verdict alone. Each rewrite is the same sentence with the
explanation taken out; the one example rating ("Rating: [[5]]") becomes two at the ends of the
scale with the scale spelled out: without an explanation to write first, Qwen2.5-Coder-1.5B
copied the example's 5 as its verdict (docs/evaluation.md). Everything else (criteria, format,
answers) is FastChat's text."""


def verdict_first(text: str) -> str:
    """A FastChat prompt with the explanation dropped (only the phrases it holds are swapped;
    the verdict instruction must be among them)."""
    present = {k: v for k, v in VERDICT_FIRST.items() if k in text}
    if not any(k.startswith("After providing") for k in present):
        raise JudgeError("verdict-first rewrite: the prompt has no 'After providing your "
                         "explanation' instruction")  # fmt: skip
    return rewrite(text, present)


def fastchat(name: str, reasoning: bool, **fields: str) -> Messages:
    """FastChat's judge prompt ``name`` (from the packaged MT-Bench data) filled with
    ``fields``; verdict-first unless ``reasoning``."""
    from fedloom.data.catalog import mtbench_judge_prompts

    tpl = mtbench_judge_prompts()[name]
    system, user = tpl["system_prompt"], tpl["prompt_template"].format(**fields)
    if not reasoning:
        if "After providing" in system:
            system = verdict_first(system)
        else:
            user = verdict_first(user)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
