"""KnowledgeSG settings: the `knowledgesg:` section of a pipeline config."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedloom.errors import FedloomError
from fedloom.generation import GenerationConfig, GeneratorConfig
from fedloom.judges.config import JudgeConfig
from fedloom.settings import ClientDPConfig, _require
from fedloom.synth.knowledgesg.methods import KSG_METHODS, SynthMethod


class KSGError(FedloomError, ValueError):
    """The KnowledgeSG pipeline cannot run as configured."""


@dataclass
class KSGConfig:
    methods: list[str] = field(default_factory=lambda: list(KSG_METHODS))
    """Which rows of the method table to run (`fedloom pipeline ... --set
    knowledgesg.methods=[dp-ksg]`)."""
    private_source: str = "medmcqa"
    """Multiple-choice records with explanations: question -> right option + explanation."""
    private: int = 300
    """Private pairs, dealt round-robin to the clients."""
    heldout: int = 60
    """Private-like pairs kept out of everything, for the held-out loss and free-form answers."""
    public_source: str = "medqa"
    public: int = 30
    """Public seed pairs the prompts may show (never private)."""
    num_clients: int = 1
    examples: str = "public"
    """For ksg / dp-ksg: `public` (3 public seed pairs in each prompt; faithful), `none` (the
    task statement only) or `private` (3 of the client's private pairs: the original code's
    leak, labelled `leaky` in every output)."""
    k: int = 3
    example_words: int = 60
    synthetic: int = 60
    """Prompts (one sample each) per synthesising method."""
    min_instruction_words: int = 4
    max_example_similarity: float = 0.52
    """Drop an instruction whose TF-IDF cosine (fitted on the two texts) to any shown example
    instruction is above this."""
    near_duplicate: float = 0.9
    """MiniLM cosine at or above which a later instruction repeats an earlier one."""
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(
            max_new_tokens=160, temperature=0.7, top_p=1.0, batch_size=8
        )
    )
    instruction_tokens: int = 48
    """New tokens for writers asked for an instruction only."""
    answer_tokens: int = 160
    dp: ClientDPConfig = field(
        default_factory=lambda: ClientDPConfig(target_epsilon=8.0, max_grad_norm=1.0)
    )
    professional: GeneratorConfig = field(
        default_factory=lambda: GeneratorConfig(model="qwen2.5-coder-1.5b-instruct")
    )
    """The model that rates and answers (the strongest offline generator by default; an
    OpenAI-compatible endpoint in a real deployment)."""
    min_rating: float = 6.0
    canaries: int = 4
    canary_repeats: int = 5
    canary_digits: int = 6
    exposure_candidates: int = 200
    suite: str | None = "medmcqa"
    suite_limit: int = 60
    freeform: int = 20
    """Held-out questions the final model answers (saved; scored when `judge` is set)."""
    judge: JudgeConfig | None = None
    """Rates the free-form answers 1-10 against their references (the `reference` judge), e.g.
    `{generator: {model: qwen2.5-coder-1.5b-instruct}}` or an OpenAI-compatible endpoint;
    null: the answers are saved unscored."""

    def __post_init__(self) -> None:
        w = "knowledgesg"
        unknown = [m for m in self.methods if m not in KSG_METHODS]
        _require(not unknown, f"`{w}.methods`: unknown {unknown}; choose from {list(KSG_METHODS)}")
        _require(bool(self.methods), f"`{w}.methods` is empty")
        _require(len(set(self.methods)) == len(self.methods), f"`{w}.methods` repeats a method")
        _require(self.private >= 10, f"`{w}.private` must be >= 10")
        _require(self.heldout >= 2, f"`{w}.heldout` must be >= 2")
        _require(self.num_clients >= 1, f"`{w}.num_clients` must be >= 1")
        _require(
            self.private >= 10 * self.num_clients,
            f"`{w}.private` ({self.private}) gives each of {self.num_clients} clients < 10 pairs",
        )
        _require(
            self.examples in ("public", "none", "private"),
            f"`{w}.examples` is {self.examples!r}; use public, none or private",
        )
        _require(1 <= self.k <= self.public, f"`{w}.k` must be in [1, public]")
        _require(self.synthetic >= 1, f"`{w}.synthetic` must be >= 1")
        _require(0 < self.max_example_similarity <= 1, f"`{w}.max_example_similarity` in (0, 1]")
        _require(0 < self.near_duplicate <= 1, f"`{w}.near_duplicate` in (0, 1]")
        _require(self.generation.n == 1, f"`{w}.generation.n` must be 1 (one sample per prompt)")
        _require(1 <= self.min_rating <= 10, f"`{w}.min_rating` must be in [1, 10]")
        _require(self.canaries >= 0 and self.canary_repeats >= 1, f"`{w}.canaries` >= 0")
        _require(self.instruction_tokens >= 8, f"`{w}.instruction_tokens` must be >= 8")
        _require(self.answer_tokens >= 8, f"`{w}.answer_tokens` must be >= 8")
        _require(self.freeform >= 0, f"`{w}.freeform` must be >= 0")
        _require(self.freeform <= self.heldout, f"`{w}.freeform` must be <= `{w}.heldout`")
        _require(
            self.dp.target_epsilon is not None or self.dp.noise_multiplier is not None,
            f"`{w}.dp` needs target_epsilon or noise_multiplier",
        )

    def method_rows(self) -> list[SynthMethod]:
        return [KSG_METHODS[m] for m in self.methods]

    def examples_of(self, m: SynthMethod) -> str:
        return self.examples if m.examples == "config" else m.examples

    def leaky(self, m: SynthMethod) -> bool:
        """Method ``m`` sends private text in its prompts under this config."""
        return m.leaky(self.examples)

    def writers(self) -> list[str]:
        found = {m.writer for m in self.method_rows() if m.writer in ("dp", "plain")}
        return [w for w in ("dp", "plain") if w in found]
