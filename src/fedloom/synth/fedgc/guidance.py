"""FedGC axes 2 and 3 — prompt design and generation guidance: what the generator is shown to
write one new example of a label.

Prompt designs (what the task prompt says):
    single:  one fixed template per label
    multi:   one of several templates per label (a seeded choice per prompt)
    llm:     a task prompt the generator itself wrote for the label (written once, recorded)
Guidance (what goes with it):
    prompt:  the task prompt only
    real:    k of the client's own examples of that label, and "write another like these"
    both:    the task prompt and the k real examples
"""

from __future__ import annotations

import random
from collections.abc import Sequence

SINGLE = "Write {a_task_item} about {label}."
MULTI = (
    "Write {a_task_item} about {label}.",
    "Write a new, realistic {task_item} on a specific topic within {label}.",
    "Invent {a_task_item} that a student of {label} might be asked.",
    "Compose one {task_item} from the field of {label}; be concrete and specific.",
)
PROMPT_DESIGNS = ("single", "multi", "llm")
GUIDANCE = ("prompt", "real", "both")
LLM_PROMPT_REQUEST = (
    "Write an instruction that asks an assistant to produce one {task_item} about {label}. "
    "Reply with the instruction only."
)


def with_article(noun: str) -> str:
    """'an exam question', 'a quiz question' (by the first letter)."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def task_prompt(
    design: str,
    label: str,
    task_item: str,
    rng: random.Random,
    llm_prompts: dict[str, list[str]] | None = None,
) -> str:
    if design == "single":
        return SINGLE.format(a_task_item=with_article(task_item), label=label)
    if design == "multi":
        return rng.choice(MULTI).format(
            task_item=task_item, a_task_item=with_article(task_item), label=label
        )
    if design == "llm":
        options = (llm_prompts or {}).get(label)
        if not options:
            raise ValueError(f"prompt design `llm` has no written prompt for label {label!r}")
        return rng.choice(options)
    raise ValueError(f"prompt design {design!r}: use one of {PROMPT_DESIGNS}")


def guided_prompt(guidance: str, prompt: str, examples: Sequence[str], task_item: str) -> str:
    """The generation prompt for one example. ``examples``: the client's own texts of that
    label (used by `real` and `both`)."""
    shown = "\n".join(f"Example {i + 1}: {e}" for i, e in enumerate(examples))
    if guidance == "prompt":
        return f"{prompt} Reply with the {task_item} only."
    if not examples:
        raise ValueError(
            f"guidance {guidance!r} needs real examples of the label; the client has none"
        )
    if guidance == "real":
        return (
            f"{shown}\n\nWrite one new {task_item} like these: the same subject and style, "
            f"but not a copy of any of them. Reply with the {task_item} only."
        )
    if guidance == "both":
        return f"{prompt}\n\nFor reference, here are some examples:\n{shown}\n\nReply with one new {task_item} only."
    raise ValueError(f"guidance {guidance!r}: use one of {GUIDANCE}")
