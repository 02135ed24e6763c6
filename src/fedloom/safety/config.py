"""The `safety` pipeline's settings (the `safety:` section of a pipeline config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedloom.generation import GeneratorConfig
from fedloom.judges.config import JudgeConfig
from fedloom.settings import _require

ROBUST = ["median", "trimmed_mean", "krum", "multikrum", "norm_bound", "dnc", "foolsgold"]


@dataclass
class SafetyPipelineConfig:
    num_clients: int = 10
    malicious: float = 0.3
    """Share of clients that are malicious in the attack rows (the paper: 3 of 10)."""
    normal_source: str = "alpaca_en"
    """Everyday instruction pairs: the benign clients' normal data, the held-out helpfulness
    set and the level-1 defense's normal half."""
    seed_source: str = "donotanswer"
    """Public harmful prompts with a risk-area category: seeds for question writing and the
    level-1 defense's aligned half. Never an evaluation set."""
    eval_sets: list[str] = field(default_factory=lambda: ["advbench", "harmbench"])
    """Safety suites scored (all their prompts are kept out of every input)."""
    normal_per_client: int = 40
    aligned_per_client: int = 20
    attack_per_client: int = 60
    heldout: int = 40
    """Normal pairs held out for the helpfulness (loss) measurement."""
    questions: int = 600
    """Harmful questions asked for (before parsing, de-duplication and the eval guard)."""
    question_generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    attack_generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    """Answers harmful questions directly (a compliant instruct model with the hint)."""
    aligned_generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    """Answers harmful questions with refusals, and everyday questions helpfully: the
    benign clients' aligned data and the level-2 defense ("an off-the-shelf LLM")."""
    harm_check: bool = True
    """Keep only requests the `aligned_generator` refuses when asked plainly (no hint): a
    generated "harmful" request that a safety-tuned model answers is not one."""
    public_questions: int = 0
    """Public harmful requests from `seed_source` added to the generated ones before the pools
    are split (0: generated requests only)."""
    question_tokens: int = 48
    attack_tokens: int = 160
    aligned_tokens: int = 80
    normal_tokens: int = 160
    temperature: float = 0.8
    batch_size: int = 8
    guard_similarity: float = 0.6
    """TF-IDF cosine to any evaluation prompt at or above which a question is dropped."""
    reducers: list[str] = field(default_factory=lambda: list(ROBUST))
    reducer_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per reducer; `f` defaults to round(sample_clients × malicious) for krum, multikrum and
    dnc (the paper's f = round(S·M/K))."""
    defense_levels: list[int] = field(default_factory=lambda: [1, 2, 3])
    defense_aligned: int = 50
    defense_normal: int = 50
    defense_steps: int = 25
    defense_lr: float | None = None
    """None: the training config's lr."""
    defense_on_best: int = 2
    """Defense level run on top of the best robust reducer (0: none)."""
    sweep: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.4])
    """Malicious shares for the FedAvg sweep (the main share is reused, not rerun)."""
    sweep_defense: int = 2
    """Defense level run on every sweep point (0: none)."""
    advbench_limit: int | None = 100
    harmbench_limit: int | None = 50
    max_new_tokens: int = 64
    judge: JudgeConfig | None = None
    """An LLM judge besides the keyword rules: the MD-Judge-style `safety` judge on every
    answer and the MT-Bench judges (e.g. `{generator: {model: qwen2.5-coder-1.5b-instruct}}`,
    or a vLLM endpoint serving MD-Judge: `{generator: {backend: openai, base_url: ..., model:
    ...}}`); null: rules only."""
    mtbench: int = 0
    """MT-Bench questions answered per row (scored only with `judge`)."""
    select_judge: str = "auto"
    """Which judge selects the generated refusals that become aligned (and L2/L3 defense) data:
    `none` (kept as written, as the paper), `safety` (the LLM `judge`: keep answers it reads as
    safe), `rules-prefix` (the keyword rules — the same family that scores the table: circular,
    flagged in the report). `auto`: `safety` when `judge` is set, else `none`. Attack answers
    are always selected as non-refusals by `rules-prefix` (they are not what the table scores)."""

    def selector(self) -> str:
        if self.select_judge == "auto":
            return "safety" if self.judge is not None else "none"
        return self.select_judge

    def __post_init__(self) -> None:
        from fedloom.reducers import REDUCERS

        _require(self.num_clients >= 2, "`safety.num_clients` must be >= 2")
        _require(
            self.select_judge in ("auto", "none", "safety", "rules-prefix"),
            f"`safety.select_judge` is {self.select_judge!r}; use auto, none, safety or "
            "rules-prefix",
        )
        _require(
            self.select_judge != "safety" or self.judge is not None,
            "`safety.select_judge: safety` selects with the LLM judge: set `safety.judge` "
            "(e.g. {generator: {model: qwen2.5-coder-1.5b-instruct}}) or use none",
        )
        for m in [self.malicious, *self.sweep]:
            _require(0 < m < 1, f"malicious shares must be in (0, 1), got {m}")
            _require(
                1 <= round(m * self.num_clients) < self.num_clients,
                f"a malicious share of {m} of {self.num_clients} clients is "
                f"{round(m * self.num_clients)} clients; it must leave 1..n-1 malicious",
            )
        bad = [r for r in self.reducers if r not in REDUCERS or r == "mean"]
        _require(not bad, f"`safety.reducers` {bad}: choose robust ones from {sorted(REDUCERS)}")
        bad = [r for r in self.reducer_params if r not in self.reducers]
        _require(not bad, f"`safety.reducer_params` names reducers not in `reducers`: {bad}")
        bad_l = [k for k in self.defense_levels if k not in (1, 2, 3)]
        _require(not bad_l, f"`safety.defense_levels` must be among 1, 2, 3, got {bad_l}")
        for k in (self.defense_on_best, self.sweep_defense):
            _require(k in (0, 1, 2, 3), "defense levels are 0 (none), 1, 2 or 3")
        for name in ("normal_per_client", "aligned_per_client", "attack_per_client", "heldout"):
            _require(getattr(self, name) >= 1, f"`safety.{name}` must be >= 1")
        _require(self.questions >= 3, "`safety.questions` must be >= 3")
        _require(self.defense_steps >= 1, "`safety.defense_steps` must be >= 1")
        _require(bool(self.eval_sets), "`safety.eval_sets` is empty")
        from fedloom.eval.suites import SUITES

        for s in self.eval_sets:
            _require(
                s in ("advbench", "harmbench", "donotanswer") and s in SUITES,
                f"`safety.eval_sets`: {s!r} is not a safety suite (advbench, harmbench)",
            )
        _require(
            self.seed_source not in self.eval_sets,
            f"`safety.seed_source` {self.seed_source!r} is also an evaluation set",
        )

    def shares(self) -> list[float]:
        """Every malicious share a row trains with (main first)."""
        return [self.malicious, *[m for m in self.sweep if m != self.malicious]]

    def limit(self, suite: str) -> int | None:
        return {"advbench": self.advbench_limit, "harmbench": self.harmbench_limit}.get(suite)
