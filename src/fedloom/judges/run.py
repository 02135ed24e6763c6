"""Running a judge: :class:`JudgeModel` (the judging generator, built once, checked by a
preflight request before a stage's expensive work) and :func:`run_judge`, which asks the judge
about every item as a resumable generation job (batched; a failed request retried by the
backend, then by the rerun; a dead endpoint stops the job) and parses the replies. An item
whose reply holds no verdict is unjudged: it is counted, never scored as 0."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fedloom.generation import (
    GenerationConfig,
    TextGenerator,
    build_generator,
    read_job,
    run_complete,
)
from fedloom.judges.base import Item, JudgeError, JudgeKind, get_judge_kind
from fedloom.judges.config import JudgeConfig


class JudgeUnavailable(JudgeError):
    """The judge's model or endpoint does not answer (found by the preflight request)."""


class JudgeModel:
    """The generator a judge runs on, built on first use (a local model loads then).
    :meth:`shared` gives one per config per process: a pipeline's preflight and its stages
    share the loaded judge."""

    _shared: ClassVar[dict[str, JudgeModel]] = {}

    def __init__(self, cfg: JudgeConfig, generator: TextGenerator | None = None) -> None:
        self.cfg, self._generator = cfg, generator
        self.label = cfg.label()

    @classmethod
    def shared(cls, cfg: JudgeConfig) -> JudgeModel:
        key = repr(cfg)
        if key not in cls._shared:
            cls._shared[key] = cls(cfg)
        return cls._shared[key]

    @property
    def generator(self) -> TextGenerator:
        if self._generator is None:
            self._generator = build_generator(self.cfg.generator)
        return self._generator

    def generation(self) -> GenerationConfig:
        """Greedy, short (verdict-first) or long (reasoning) replies, batched."""
        return GenerationConfig(
            max_new_tokens=self.cfg.new_tokens(),
            temperature=0.0,
            batch_size=self.cfg.batch_size,
            max_consecutive_failures=self.cfg.batch_size * 2,
        )

    def preflight(self) -> None:
        """One 1-token request: an unreachable endpoint, a wrong model name or a server error
        fails here, in seconds, with the endpoint named (not after a stage's generation)."""
        if not self.cfg.preflight:
            return
        where = self.cfg.generator.base_url or "this machine"
        try:
            gen = self.generator.generate(["Reply OK."], GenerationConfig(max_new_tokens=1))[0][0]
        except Exception as e:  # noqa: BLE001  (any failure here is the judge's)
            raise JudgeUnavailable(
                f"judge {self.label} ({where}) failed its preflight request: "
                f"{type(e).__name__}: {e}"[:400]
            ) from None
        if gen.error:
            raise JudgeUnavailable(
                f"judge {self.label} failed its preflight request: {gen.error}; check "
                "`judge.generator.base_url` and `judge.generator.model` (is the server up and "
                "serving that model?)"
            )


@dataclass
class Judged:
    """A judge's verdicts on a set of items."""

    kind: str
    judge: str
    values: dict[str, float]
    """Item id -> value, for the items the judge gave a verdict on."""
    unjudged: list[str]
    """Items whose reply held no verdict (left out of every score)."""
    parsed: dict[str, list[float | None]] = field(default_factory=dict)
    """Item id -> each reply's parsed verdict (two for a pairwise item: both orders)."""
    seconds: float = 0.0

    @property
    def replies(self) -> list[float | None]:
        """Every reply's parsed verdict (None: no verdict in it)."""
        return [v for vs in self.parsed.values() for v in vs]

    @property
    def parse_rate(self) -> float:
        replies = self.replies
        return sum(v is not None for v in replies) / max(len(replies), 1)

    @property
    def items_per_second(self) -> float:
        return len(self.parsed) / self.seconds if self.seconds else 0.0

    def mean(self) -> float | None:
        return sum(self.values.values()) / len(self.values) if self.values else None

    def line(self) -> str:
        """The figures printed beside every judged score."""
        rate = f"{len(self.values)}/{len(self.parsed)} judged ({self.parse_rate:.0%} of replies parsed)"
        speed = f"{self.items_per_second:.2f} items/s" if self.seconds else "cached"
        return f"{self.kind} judge {self.judge}: {rate}, {speed}"

    def summary(self) -> dict[str, Any]:
        mean = self.mean()
        return {
            "kind": self.kind,
            "judge": self.judge,
            "mean": None if mean is None else round(mean, 4),
            "judged": len(self.values),
            "unjudged": len(self.unjudged),
            "parse_rate": round(self.parse_rate, 4),
            "items_per_second": round(self.items_per_second, 3) if self.seconds else None,
        }


def judge_prompts(
    kind: JudgeKind, items: Sequence[tuple[str, Item]], reasoning: bool
) -> dict[str, list[tuple[str, Any]]]:
    """Item id -> (call id, messages) of its requests: ``<item id>#<k>`` for its k-th prompt."""
    calls = {}
    for item_id, item in items:
        kind.check(item_id, item)
        calls[item_id] = [
            (f"{item_id}#{k}", m) for k, m in enumerate(kind.prompts(item, reasoning))
        ]
    return calls


def run_judge(
    kind_name: str,
    model: JudgeModel,
    items: Sequence[tuple[str, Item]],
    path: str | Path,
    progress: bool = True,
) -> Judged:
    """Judge every (id, item) as a resumable job at ``path`` (a rerun asks only what is
    missing or failed). Raises :class:`~fedloom.generation.IncompleteJob` when requests failed
    after their retries: a stage with unjudged-because-failed items is not done."""
    kind = get_judge_kind(kind_name)
    per_item = judge_prompts(kind, items, model.cfg.reasoning)
    calls = [c for cs in per_item.values() for c in cs]
    t0 = time.perf_counter()
    report = run_complete(model.generator, calls, model.generation(), path, progress)
    seconds = time.perf_counter() - t0 if report.generated else 0.0
    replies = read_job(path, ids=[c for c, _ in calls]).texts()
    parsed = {i: [kind.parse(replies[c]) for c, _ in cs] for i, cs in per_item.items()}
    values = {i: v for i, ps in parsed.items() if (v := kind.combine(ps)) is not None}
    unjudged = [i for i in parsed if i not in values]
    return Judged(kind.name, model.label, values, unjudged, parsed, seconds)
