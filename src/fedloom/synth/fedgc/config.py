"""FedGC settings: the `fedgc:` section (grid, ablations, generation), and a row's variant."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from fedloom.generation import GenerationConfig, GeneratorConfig
from fedloom.settings import _require
from fedloom.synth.fedgc.budget import BUDGETS
from fedloom.synth.fedgc.guidance import (
    GUIDANCE,
    PROMPT_DESIGNS,
)
from fedloom.synth.fedgc.strategy import STRATEGIES

AXES = ("budget", "label_allocation", "prompt", "guidance", "strategy")


@dataclass
class Variant:
    name: str
    budget: str
    label_allocation: str
    prompt: str
    guidance: str
    strategy: str
    total: int
    """Generated examples over all clients (0: no FedGC)."""
    generated_only: bool = False

    def gen_key(self, alpha: float) -> str:
        return f"a{alpha}-{self.budget}-{self.label_allocation}-{self.prompt}-{self.guidance}-{self.total}"


@dataclass
class FedGCConfig:
    source: str = "mmlu_topics"
    num_clients: int = 10
    private_per_client: int = 30
    heldout_per_label: int = 25
    alphas: list[float] = field(default_factory=lambda: [0.1, 0.5])
    algorithms: list[str] = field(default_factory=lambda: ["fedavg", "fedprox", "scaffold"])
    algorithm_params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"fedprox": {"mu": 0.01}}
    )
    total: int = 300
    budget: str = "equal"
    label_allocation: str = "fill"
    prompt: str = "multi"
    guidance: str = "both"
    strategy: str = "mixed"
    ablations: list[str] = field(
        default_factory=lambda: [
            "budget",
            "prompt",
            "guidance",
            "strategy",
            "amount",
            "generated-only",
        ]
    )
    amounts: list[int] = field(default_factory=lambda: [100, 600])
    ablation_alpha: float = 0.1
    ablation_algorithm: str = "fedavg"
    k: int = 3
    """Real examples shown by `real` / `both` guidance."""
    task_item: str = "exam question"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(max_new_tokens=60, temperature=0.8, batch_size=8)
    )
    llm_prompts_per_label: int = 4
    min_words: int = 5
    max_words: int = 80
    mia_examples: int = 40

    def __post_init__(self) -> None:
        from fedloom.algorithms import ALGORITHMS

        _require(self.num_clients >= 2, "`fedgc.num_clients` must be >= 2")
        _require(
            bool(self.alphas) and all(a > 0 for a in self.alphas), "`fedgc.alphas` must be > 0"
        )
        bad = [a for a in [*self.algorithms, self.ablation_algorithm] if a not in ALGORITHMS]
        _require(not bad, f"`fedgc.algorithms`: unknown {bad}; choose from {sorted(ALGORITHMS)}")
        _require(self.budget in BUDGETS, f"`fedgc.budget` must be one of {sorted(BUDGETS)}")
        _require(
            self.label_allocation in ("uniform", "fill"),
            "`fedgc.label_allocation`: uniform or fill",
        )
        _require(self.prompt in PROMPT_DESIGNS, f"`fedgc.prompt` must be one of {PROMPT_DESIGNS}")
        _require(self.guidance in GUIDANCE, f"`fedgc.guidance` must be one of {GUIDANCE}")
        _require(
            self.strategy in STRATEGIES, f"`fedgc.strategy` must be one of {sorted(STRATEGIES)}"
        )
        known = {
            "budget",
            "prompt",
            "guidance",
            "strategy",
            "amount",
            "generated-only",
            "label_allocation",
        }
        bad = [a for a in self.ablations if a not in known]
        _require(not bad, f"`fedgc.ablations`: unknown {bad}; choose from {sorted(known)}")
        _require(
            self.total >= 1 and all(a >= 1 for a in self.amounts), "generated amounts must be >= 1"
        )
        _require(
            self.ablation_alpha in self.alphas, "`fedgc.ablation_alpha` must be one of `alphas`"
        )
        _require(
            self.private_per_client >= 2 and self.heldout_per_label >= 1, "sizes must be positive"
        )

    def default(self) -> Variant:
        return Variant(
            "fedgc",
            self.budget,
            self.label_allocation,
            self.prompt,
            self.guidance,
            self.strategy,
            self.total,
        )

    def variants(self) -> list[Variant]:
        """The ablation variants: one axis changed from the default at a time."""
        d = self.default()
        out: list[Variant] = []
        choices = {
            "budget": sorted(BUDGETS),
            "label_allocation": ["uniform", "fill"],
            "prompt": list(PROMPT_DESIGNS),
            "guidance": list(GUIDANCE),
            "strategy": sorted(STRATEGIES),
        }
        for axis in self.ablations:
            if axis in choices:
                for c in choices[axis]:
                    if c != getattr(d, axis):
                        out.append(replace(d, name=f"{axis}={c}", **{axis: c}))  # type: ignore[arg-type]
            elif axis == "amount":
                out += [
                    replace(d, name=f"amount={n}", total=n) for n in self.amounts if n != d.total
                ]
            elif axis == "generated-only":
                out.append(replace(d, name="generated-only", generated_only=True))
        return out
