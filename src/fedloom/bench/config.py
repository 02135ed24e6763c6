"""The `bench:` section of a bench config (`fedloom bench CONFIG`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedloom.judges.config import JudgeConfig
from fedloom.settings import ConfigError

METHODS = ("local", "fedavg", "fedprox", "scaffold", "fedavgm", "fedadagrad", "fedyogi", "fedadam")
"""FedLLM-Bench's eight methods."""


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


@dataclass
class BenchConfig:
    federations: list[str] = field(
        default_factory=lambda: ["fed-chat", "fed-multilingual", "fed-medmcqa-subject"]
    )
    """Names from `fedloom data stats --list` (`fedloom.bench.FEDERATIONS`)."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """FL algorithms (`fedloom algorithms`); `local` is the no-federation baseline."""
    methods_for: dict[str, list[str]] = field(default_factory=dict)
    """Methods per federation where they differ from `methods`, e.g. `{fed-preference:
    [local, fedavg]}`."""
    epochs: dict[str, float] = field(default_factory=dict)
    """`train.epochs` per federation for `train.local_steps: dynamic` (federations differ
    15x in size: one E would give them 15x different costs); default the `train` section's."""
    method_params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "fedprox": {"mu": 0.01},
            "fedadagrad": {"beta1": 0.5},
            "fedyogi": {"beta1": 0.5},
            "fedadam": {"beta1": 0.5},
        }
    )
    """`federation.params` per method (FedLLM-Bench: FedProx μ 0.01, FedOpt β1 0.5)."""
    seeds: list[int] | None = None
    """Moved to the pipeline config's top-level `seeds:` (refused here, with that hint)."""
    engine: str = "inprocess"
    """`inprocess` (one process) or `flower-sim` (Flower's simulation engine)."""
    sample_clients: dict[str, int] = field(default_factory=dict)
    """Clients per round per federation (default: the federation's own)."""
    heldout: int = 50
    """Held-out examples scored for loss (per federation, fixed by the seed)."""
    rouge: int = 16
    """Held-out prompts answered greedily and scored by ROUGE-L against their reference (and,
    with a judge, rated for helpfulness); 0 turns both off."""
    suites: list[str] = field(default_factory=lambda: ["mtbench", "advbench", "mmlu"])
    """Offline suites scored on every cell (`fedloom eval --list`)."""
    suite_limits: dict[str, int] = field(
        default_factory=lambda: {"mtbench": 8, "advbench": 20, "mmlu": 40}
    )
    """Fixed-seed subset size per suite (a suite not named: 20)."""
    max_new_tokens: int = 64
    judge: JudgeConfig | None = None
    """Rates MT-Bench and the held-out answers' helpfulness (1-10), e.g. `{generator: {model:
    qwen2.5-coder-1.5b-instruct}}` or an OpenAI-compatible endpoint; null: answers saved
    unscored."""
    stats: bool = True
    """Per-federation diversity statistics and plots (a stage per federation)."""
    embedder: str = "minilm"
    """Sentence embedder of the embedding plot (`minilm`, or `tfidf` for no model)."""

    def __post_init__(self) -> None:
        from fedloom.algorithms import ALGORITHMS
        from fedloom.bench.federations import FEDERATIONS
        from fedloom.eval.suites import SUITES

        _require(bool(self.federations), "`bench.federations` is empty")
        unknown = [f for f in self.federations if f not in FEDERATIONS]
        _require(
            not unknown,
            f"`bench.federations` has unknown {unknown}; choose from {sorted(FEDERATIONS)}",
        )
        _require(bool(self.methods), "`bench.methods` is empty")
        bad = [m for m in self.methods if m not in ALGORITHMS]
        _require(not bad, f"`bench.methods` has unknown {bad}; choose from {sorted(ALGORITHMS)}")
        _require(
            len(set(self.methods)) == len(self.methods), "`bench.methods` lists a method twice"
        )
        _require(
            self.seeds is None,
            "`bench.seeds` moved to the top level: write `seeds: [0, 1, 2]` beside `method:` "
            "(or --set 'seeds=[0,1,2]')",
        )
        _require(
            self.engine in ("inprocess", "flower-sim"),
            f"`bench.engine` is {self.engine!r}; use inprocess or flower-sim",
        )
        bad = [s for s in self.suites if s not in SUITES]
        _require(not bad, f"`bench.suites` has unknown {bad}; choose from {sorted(SUITES)}")
        _require(self.heldout >= 1, "`bench.heldout` must be >= 1")
        _require(self.rouge >= 0, "`bench.rouge` must be >= 0")
        _require(self.max_new_tokens >= 1, "`bench.max_new_tokens` must be >= 1")
        for name, per in (("sample_clients", self.sample_clients), ("methods_for",
                          self.methods_for), ("epochs", self.epochs)):  # fmt: skip
            bad = [f for f in per if f not in FEDERATIONS]  # others: `bench.federations` narrowed
            _require(
                not bad, f"`bench.{name}` names unknown {bad}; choose from {sorted(FEDERATIONS)}"
            )
        for f, ms in self.methods_for.items():
            bad = [m for m in ms if m not in ALGORITHMS]
            _require(
                bool(ms) and not bad,
                f"`bench.methods_for.{f}` is empty or has unknown {bad}; choose from "
                f"{sorted(ALGORITHMS)}",
            )
        bad = [f for f, e in self.epochs.items() if not e > 0]
        _require(not bad, f"`bench.epochs` must be > 0 (check {bad})")

    def methods_of(self, federation: str) -> list[str]:
        return self.methods_for.get(federation, self.methods)

    def limit(self, suite: str) -> int:
        return self.suite_limits.get(suite, 20)
