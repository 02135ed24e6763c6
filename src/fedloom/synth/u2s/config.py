"""FedIT-U2S settings: the `u2s:` section of a pipeline config."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedloom.errors import FedloomError
from fedloom.generation import GenerationConfig, GeneratorConfig
from fedloom.settings import _require

PROMPT_VERSION = "u2s-v1"
SELECTIONS = ("retrieval", "random", "fixed")


class U2SError(FedloomError, ValueError):
    """The U2S data cannot be built as configured."""


@dataclass
class DomainConfig:
    name: str
    """Domain label (medicine, knowledge, math ...): held-out loss is reported per domain."""
    text_source: str
    """Registered source whose records give the clients' raw text (a document's text, a worked
    solution, a multiple-choice explanation)."""
    clients: list[int]
    """Clients holding this domain's text (pieces are dealt among them)."""
    pieces: int = 32
    """Text pieces generated from, per domain."""
    pool_source: str | None = None
    """Structured source of the example pool's triples (default: `text_source`)."""
    pool: int = 40
    gold_source: str | None = None
    """Source of the gold instruction pairs held out for evaluation (default: `pool_source`)."""
    gold: int = 40
    suite: str | None = None
    """The benchmark suite matching this domain (gsm8k, medmcqa ...), scored in `evaluate`."""

    def __post_init__(self) -> None:
        import fedloom.data.catalog  # noqa: F401
        from fedloom.data.sources import SOURCES

        for what in ("text_source", "pool_source", "gold_source"):
            name = getattr(self, what)
            _require(
                name is None or name in SOURCES,
                f"`u2s.domains[{self.name}].{what}` is {name!r}; choose one of {sorted(SOURCES)}",
            )
        _require(bool(self.clients), f"`u2s.domains[{self.name}].clients` is empty")
        _require(self.pieces >= 1 and self.pool >= 0 and self.gold >= 1, "pieces/gold >= 1")

    @property
    def pool_from(self) -> str:
        return self.pool_source or self.text_source

    @property
    def gold_from(self) -> str:
        return self.gold_source or self.pool_from


@dataclass
class U2SConfig:
    domains: list[DomainConfig]
    num_clients: int
    selection: str = "retrieval"
    """How the k examples are chosen: retrieval, random or fixed (the paper's ablation)."""
    k: int = 3
    embedder: str = "minilm"
    """Retrieval embedder: minilm (all-MiniLM-L6-v2) or tfidf."""
    piece_tokens: int = 200
    """Maximum piece length (generator tokens), cut at sentence boundaries."""
    min_piece_words: int = 20
    """Shorter pieces are dropped (counted)."""
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(max_new_tokens=256, temperature=0.7, top_p=0.9)
    )
    example_words: int = 120
    """Pool examples are shown cut to this many words per field (keeps prompts short)."""
    max_response_words: int = 300
    """Parsed responses longer than this are dropped (`too_long`)."""
    min_grounding: float = 0.3
    """Share of the pair's content words that must appear in the piece (`not_grounded`)."""
    train_on: str = "generated"
    """`generated` (U2S) or `gold` (the real pairs behind the clients' text: the upper bound)."""
    suite_limit: int = 100
    """Items per suite in `evaluate`."""

    def __post_init__(self) -> None:
        _require(self.selection in SELECTIONS, f"`u2s.selection` must be one of {SELECTIONS}")
        _require(self.k >= 1, "`u2s.k` must be >= 1")
        _require(self.piece_tokens >= 16, "`u2s.piece_tokens` must be >= 16")
        _require(self.train_on in ("generated", "gold"), "`u2s.train_on`: generated or gold")
        _require(0 <= self.min_grounding <= 1, "`u2s.min_grounding` must be in [0, 1]")
        _require(len(self.domains) > 0, "`u2s.domains` is empty")
        from fedloom.embed import EMBEDDERS

        _require(
            self.embedder in EMBEDDERS,
            f"`u2s.embedder` is {self.embedder!r}; choose one of {sorted(EMBEDDERS)}",
        )
        covered = sorted({c for d in self.domains for c in d.clients})
        _require(
            covered == list(range(self.num_clients)),
            f"`u2s.domains[].clients` cover {covered}; every client 0..{self.num_clients - 1} "
            "needs text and no other ids may appear",
        )
        for d in self.domains:
            _require(d.pool >= self.k, f"`u2s.domains[{d.name}].pool` must be >= k ({self.k})")
