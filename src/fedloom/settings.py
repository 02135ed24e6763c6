"""Run settings: the config dataclasses and their own checks (types, ranges, combinations of
fields), the dict -> dataclass builder and ``--set key=value`` overrides.

Every section is a dataclass validated in ``__post_init__``; an unknown key or an impossible value
raises :class:`ConfigError` naming the field (``partition.num_clients``) and what to do. Checks
against the registries (algorithm, reducer, codec, partitioner, source, suite and task names, and
the rules that need an algorithm's or reducer's properties) live one layer up, in
:mod:`fedloom.config`, which every entry point loads configs through. This module imports no
registry, so every registry can import it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fedloom.errors import FedloomError

T = TypeVar("T")


class ConfigError(FedloomError, ValueError):
    """A run configuration is invalid; the message names the field and the fix."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class ModelConfig:
    name: str = "tiny-llama"
    """`smollm2-135m-instruct`, `tiny-llama`, a local Hugging Face model folder or a `.gguf` file."""
    device: str = "auto"
    """`auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`."""
    precision: str = "auto"
    """`auto` (bf16 autocast on CUDA or CPUs with native bf16, else fp32), `bf16` or `fp32`."""
    gradient_checkpointing: bool = False
    seed: int = 0
    """Seed of the random weights of `tiny-llama` (ignored for real models)."""

    def __post_init__(self) -> None:
        _require(bool(self.name), "`model.name` is empty: give a model name, folder or .gguf path")
        _require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            f"`model.device` is {self.device!r}: use auto, cpu, cuda or cuda:N",
        )
        _require(
            self.precision in ("auto", "bf16", "fp32"),
            f"`model.precision` is {self.precision!r}: use auto, bf16 or fp32",
        )


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    init_from: str | None = None
    """Start from an existing adapter folder (PEFT format, e.g. `runs/x/adapter`) instead of a
    fresh one: continued training, post-hoc defense. Its r and target modules must match."""

    def __post_init__(self) -> None:
        _require(self.r > 0, f"`lora.r` must be > 0 (got {self.r})")
        _require(self.alpha > 0, f"`lora.alpha` must be > 0 (got {self.alpha})")
        _require(
            0.0 <= self.dropout < 1.0, f"`lora.dropout` must be in [0, 1) (got {self.dropout})"
        )
        _require(len(self.target_modules) > 0, "`lora.target_modules` is empty: name at least one")
        if self.init_from is not None:
            _require(
                (Path(self.init_from) / "adapter_model.safetensors").is_file(),
                f"`lora.init_from`: {self.init_from!r} holds no adapter_model.safetensors; point "
                "it at a saved adapter folder (a run's `adapter/`)",
            )


@dataclass
class SourceConfig:
    name: str
    """A registered source (`fedloom data list`) or `local`."""
    limit: int | None = None
    """Use at most this many examples (a seeded random subset), before the held-out split."""
    path: str | None = None
    """For `local`: a .json, .jsonl, .csv or .parquet file."""
    columns: dict[str, str] = field(default_factory=dict)
    """For `local`: record field -> column, e.g. {instruction: question, domain: topic}."""
    schema: str = "instruction"
    """For `local`: the record schema the rows map into (instruction, conversation, preference,
    multiple_choice, prompt, text)."""
    skip_malformed: bool = False
    """For `local`: skip rows that do not fit (counted and reported) instead of stopping."""
    domain: str | None = None
    """Domain label for every example of this source (used by splits and per-domain evaluation);
    for `local`, default: the file's domain column, else the file name."""
    clients: list[int] | None = None
    """Client-owned data: this source's training records belong to these clients only (dealt
    among them); sources without `clients` are partitioned over all clients by
    `partition.strategy`. E.g. one file per client: `clients: [0]`, `clients: [1]`, ..."""
    heldout: int | None = None
    """Held-out examples of this source (None: `data.heldout`; 0: none, all train)."""
    heldout_only: bool = False
    """Evaluation-only source: all its examples (up to `limit`) are held out, none trained on
    (e.g. gold pairs scored after training on generated data)."""
    where: dict[str, Any] = field(default_factory=dict)
    """Keep only records whose metadata matches, before `limit` and the held-out split: a key
    maps to a list of accepted values (`{language: [ko, es]}`) or to a comparison on a number
    (`{turns: ">=4"}`; operators <, <=, >, >=, ==, !=). What it leaves out is counted."""

    def __post_init__(self) -> None:
        _require(bool(self.name), "`data.sources[].name` is empty")
        _require(
            self.clients is None or (len(self.clients) > 0 and min(self.clients) >= 0),
            f"`clients` of source {self.name!r} must be a non-empty list of client ids >= 0 "
            "(or left out: partitioned over all clients)",
        )
        _require(
            self.heldout is None or self.heldout >= 0,
            f"`heldout` of source {self.name!r} must be >= 0",
        )
        _require(
            not (self.heldout_only and self.clients),
            f"source {self.name!r} is `heldout_only` and so has no training records to assign "
            "to `clients`",
        )
        _require(
            self.limit is None or self.limit > 0, f"`limit` of source {self.name!r} must be > 0"
        )


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig(name="alpaca_en")])
    heldout: int = 50
    """Held-out examples per source (fixed by `seed`), never used for training; a source's own
    `heldout` overrides it."""
    max_seq_len: int = 256

    def __post_init__(self) -> None:
        self.sources = [
            s if isinstance(s, SourceConfig) else SourceConfig(**s) for s in self.sources
        ]
        _require(len(self.sources) > 0, "`data.sources` is empty: list at least one source")
        _require(self.heldout >= 1, f"`data.heldout` must be >= 1 (got {self.heldout})")
        _require(
            any(not s.heldout_only for s in self.sources),
            "every source in `data.sources` is `heldout_only`: nothing is left to train on",
        )
        _require(
            self.max_seq_len >= 16, f"`data.max_seq_len` must be >= 16 (got {self.max_seq_len})"
        )


@dataclass
class PartitionConfig:
    strategy: str = "iid"
    """`iid`, `dirichlet`, `natural` or `quantity` (see `fedloom.data.partition.PARTITIONERS`)."""
    num_clients: int | None = 4
    """Number of clients; for `natural` leave empty (one client per value of `key`)."""
    key: str = "domain"
    """Metadata key that `dirichlet` skews over and `natural` splits by."""
    alpha: float = 0.5
    """Dirichlet concentration: smaller means more skew."""
    min_examples: int = 1
    size_cv: float = 1.0
    """`quantity`: coefficient of variation (sd / mean) of the clients' sizes, drawn
    log-normal (heavy-tailed pseudo-users); FedLLM-Bench's Fed-ChatbotIT has 26±33, i.e. 1.27."""

    def __post_init__(self) -> None:
        _require(
            self.num_clients is None or self.num_clients >= 1,
            f"`partition.num_clients` must be >= 1 (got {self.num_clients})",
        )
        _require(self.alpha > 0, f"`partition.alpha` must be > 0 (got {self.alpha})")
        _require(self.min_examples >= 1, "`partition.min_examples` must be >= 1")
        _require(self.size_cv >= 0, f"`partition.size_cv` must be >= 0 (got {self.size_cv})")


@dataclass
class FederationConfig:
    algorithm: str = "fedavg"
    """A name in `fedloom.algorithms.ALGORITHMS`."""
    rounds: int = 2
    sample_clients: int = 2
    """Clients sampled per round (the `local` baseline trains the same schedule)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Algorithm hyper-parameters, validated by the algorithm's own config (e.g. `mu`, `server_lr`)."""
    min_clients: int = 1
    """Flower engine: a round aggregates when at least this many sampled clients replied."""
    client_timeout: float | None = None
    """Flower engine: seconds to wait for a round's replies; a client that has not replied by
    then (crashed, disconnected, too slow) is recorded as failed. None: wait indefinitely."""
    round_retries: int = 1
    """Flower engine: times a round with fewer than `min_clients` replies is retried before the
    run stops."""
    compression: str = "none"
    """Client-to-server update encoding: none, fp16, int8 (per-row absmax) or topk (with error
    feedback); see `fedloom.compression`."""
    topk_fraction: float = 0.1
    """For `compression: topk`: share of each tensor's entries sent."""
    reducer: str = "mean"
    """How the server combines the sampled clients' updates before the algorithm's server
    step: mean, median, trimmed_mean, krum, multikrum, norm_bound, dnc, foolsgold, residual (see
    `fedloom.reducers`); robust rules need individual updates (no secagg, no central_dp)."""
    reducer_params: dict[str, Any] = field(default_factory=dict)
    """The reducer's parameters, e.g. {beta: 0.2} (trimmed_mean), {f: 1} (krum, multikrum, dnc)."""
    continue_from: str | None = None
    """A finished run folder this run continues, as the next phase of one schedule (FedGC's
    generated-then-private): the run starts from that run's final server state (global adapter,
    server moments, SCAFFOLD's control), its clients' states and its client-sampling RNG; the
    data may differ. The learning rate continues through `round_offset` / `schedule_rounds`."""
    round_offset: int = 0
    """Rounds of the schedule done before this run (its round r uses the cosine learning rate
    of round `round_offset + r`)."""
    schedule_rounds: int | None = None
    """Length of the cosine learning-rate schedule; default `round_offset + rounds`."""

    @property
    def lr_rounds(self) -> int:
        return self.schedule_rounds or self.round_offset + self.rounds

    def __post_init__(self) -> None:
        _require(self.rounds >= 1, f"`federation.rounds` must be >= 1 (got {self.rounds})")
        _require(self.round_offset >= 0, "`federation.round_offset` must be >= 0")
        _require(
            self.schedule_rounds is None or self.schedule_rounds >= self.round_offset + self.rounds,
            f"`federation.schedule_rounds` ({self.schedule_rounds}) must cover round_offset + "
            f"rounds ({self.round_offset + self.rounds})",
        )
        _require(
            self.continue_from is None or (Path(self.continue_from) / "checkpoint.pt").is_file(),
            f"`federation.continue_from`: {self.continue_from!r} holds no checkpoint.pt; point "
            "it at a run folder of `fedloom run`",
        )
        _require(self.min_clients >= 1, "`federation.min_clients` must be >= 1")
        _require(
            self.min_clients <= self.sample_clients,
            f"`federation.min_clients` ({self.min_clients}) must be <= `sample_clients` "
            f"({self.sample_clients})",
        )
        _require(
            self.client_timeout is None or self.client_timeout > 0,
            "`federation.client_timeout` must be > 0 seconds (or null: no limit)",
        )
        _require(self.round_retries >= 0, "`federation.round_retries` must be >= 0")
        _require(
            0 < self.topk_fraction <= 1,
            f"`federation.topk_fraction` must be in (0, 1] (got {self.topk_fraction})",
        )
        _require(
            self.sample_clients >= 1,
            f"`federation.sample_clients` must be >= 1 (got {self.sample_clients})",
        )


@dataclass
class TrainConfig:
    local_steps: int | str = 5
    """Optimizer steps per client per round, or `dynamic` (FedLLM-Bench): each client's steps
    from its size so that it sees ~`epochs` passes over its data across the rounds it is
    expected to join (`fedloom.train.dynamic_steps`)."""
    epochs: float = 3.0
    """E of `local_steps: dynamic`."""
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    """Peak learning rate; cosine over rounds to `min_lr`, constant within a round (OpenFedLLM)."""
    min_lr: float = 1e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    """Gradient clipping; 0 disables."""
    beta: float = 0.1
    """DPO's β (`task: dpo`): strength of the pull towards the reference (base) model."""
    packing: str = "auto"
    """Pack each micro-batch into one row without padding (same loss and gradients, fewer
    FLOPs): `auto` (on where exact: SFT without client DP-SGD), `on` (refused where it cannot
    apply), `off` (pad every micro-batch to its longest example)."""

    @property
    def fixed_steps(self) -> int:
        """`local_steps` where it is a number (callers that need one check `dynamic` first)."""
        if not isinstance(self.local_steps, int):
            raise ConfigError("`train.local_steps: dynamic` has no fixed number of steps")
        return self.local_steps

    def __post_init__(self) -> None:
        _require(self.beta > 0, f"`train.beta` must be > 0 (got {self.beta})")
        _require(
            self.packing in ("auto", "on", "off"),
            f"`train.packing` is {self.packing!r}; use auto, on or off",
        )
        _require(
            self.local_steps == "dynamic"
            or (isinstance(self.local_steps, int) and self.local_steps >= 1),
            f"`train.local_steps` is {self.local_steps!r}: give a number >= 1 or `dynamic`",
        )
        _require(self.epochs > 0, f"`train.epochs` must be > 0 (got {self.epochs})")
        for name in ("batch_size", "grad_accum"):
            _require(getattr(self, name) >= 1, f"`train.{name}` must be >= 1")
        _require(self.lr > 0, f"`train.lr` must be > 0 (got {self.lr})")
        _require(0 <= self.min_lr <= self.lr, "`train.min_lr` must be in [0, train.lr]")
        _require(self.max_grad_norm >= 0, "`train.max_grad_norm` must be >= 0 (0 disables)")


@dataclass
class EvalConfig:
    every: int = 1
    """Evaluate the global adapter's held-out loss every N rounds (0: only before and after)."""
    max_examples: int = 50
    """Held-out examples per domain used for evaluation."""
    batch_size: int = 8
    sample_prompts: int = 0
    """Held-out prompts answered greedily before and after training (saved in summary.json)."""
    max_new_tokens: int = 64
    suites: list[str] = field(default_factory=list)
    """Benchmark suites (`fedloom eval` names: mmlu, gsm8k, advbench, rouge-alpaca, ...) scored
    on the base model before training, on the global adapter every `every` rounds (in
    metrics.jsonl) and on the final adapter after."""
    suite_limit: int | None = 50
    """Fixed-seed subset size per suite (None: all items)."""

    def __post_init__(self) -> None:
        _require(self.every >= 0, "`eval.every` must be >= 0")
        _require(
            self.suite_limit is None or self.suite_limit >= 1, "`eval.suite_limit` must be >= 1"
        )
        _require(self.max_examples >= 1, "`eval.max_examples` must be >= 1")
        _require(self.batch_size >= 1, "`eval.batch_size` must be >= 1")
        _require(self.sample_prompts >= 0, "`eval.sample_prompts` must be >= 0")


ACCOUNTANTS = ("rdp", "prv")


def _check_delta(delta: float | None, where: str) -> None:
    _require(
        delta is None or 0 < delta < 1,
        f"`{where}.delta` must be in (0, 1) (got {delta}); leave it empty for 1/n",
    )


def _check_sigma_or_epsilon(sigma: float | None, eps: float | None, where: str) -> None:
    _require(
        not (sigma is not None and eps is not None),
        f"`{where}`: give either `noise_multiplier` or `target_epsilon`, not both "
        "(the noise multiplier is derived from the target)",
    )
    _require(
        sigma is not None or eps is not None,
        f"`{where}`: give `noise_multiplier` (σ) or `target_epsilon` (ε, the noise is calibrated)",
    )
    _require(sigma is None or sigma >= 0, f"`{where}.noise_multiplier` must be >= 0 (got {sigma})")
    _require(eps is None or eps > 0, f"`{where}.target_epsilon` must be > 0 (got {eps})")


@dataclass
class ClientDPConfig:
    """Sample-level DP-SGD on each client (Opacus): every step clips each example's gradient of
    the trainable (LoRA) parameters to `max_grad_norm` and adds N(0, (σ·C)²) to their sum."""

    noise_multiplier: float | None = None
    """σ. Give this or `target_epsilon`, not both."""
    target_epsilon: float | None = None
    """ε each client may spend over the run; σ is calibrated per client to reach it."""
    delta: float | None = None
    """δ; default 1/n with n the client's number of training examples."""
    max_grad_norm: float = 1.0
    """Per-example clipping norm C."""
    accountant: str = "rdp"
    """`rdp` (Rényi DP, Mironov 2017) or `prv` (privacy random variables, Gopi et al. 2021)."""
    sampling: str = "poisson"
    """`poisson`: each step takes every example of the client independently with probability
    q = batch/n (the accountants' assumption); `shuffle`: fixed-size batches from a shuffle
    (accounted with the same q, the common approximation)."""
    calibrate_for: str = "all_rounds"
    """With `target_epsilon`: calibrate σ for a client taking part in `all_rounds` (the budget
    is never spent) or the `expected` number of rounds, rounds·sample_clients/num_clients
    (less noise; a client sampled more often spends its budget and stops taking part)."""
    max_epsilon: float | None = None
    """With `noise_multiplier`: a budget after which a client stops taking part (none: no stop)."""
    seeded_noise: bool = True
    """Draw noise and Poisson batches from the run's seed (reproducible). Set false to draw them
    from OS entropy, as a deployment should: a predictable noise stream gives no privacy."""

    def __post_init__(self) -> None:
        w = "privacy.client_dp"
        _check_sigma_or_epsilon(self.noise_multiplier, self.target_epsilon, w)
        _check_delta(self.delta, w)
        _require(
            self.max_grad_norm > 0,
            f"`{w}.max_grad_norm` (C) must be > 0 (got {self.max_grad_norm})",
        )
        _require(
            self.accountant in ACCOUNTANTS,
            f"`{w}.accountant` is {self.accountant!r}; choose one of {list(ACCOUNTANTS)}",
        )
        _require(
            self.sampling in ("poisson", "shuffle"),
            f"`{w}.sampling` is {self.sampling!r}; choose poisson or shuffle",
        )
        _require(
            self.calibrate_for in ("all_rounds", "expected"),
            f"`{w}.calibrate_for` is {self.calibrate_for!r}; choose all_rounds or expected",
        )
        _require(
            self.max_epsilon is None or self.target_epsilon is None,
            f"`{w}.max_epsilon` goes with `noise_multiplier`; with `target_epsilon` the target "
            "is the budget",
        )
        _require(self.max_epsilon is None or self.max_epsilon > 0, f"`{w}.max_epsilon` must be > 0")

    @property
    def budget(self) -> float | None:
        return self.target_epsilon if self.target_epsilon is not None else self.max_epsilon


@dataclass
class CentralDPConfig:
    """Client-level DP at the server: each client's update is clipped to norm C, the updates
    are averaged with equal weights and N(0, (σ·C/|S|)²) is added to the average."""

    noise_multiplier: float | None = None
    """σ. Give this or `target_epsilon`, not both."""
    target_epsilon: float | None = None
    """ε over the run (client level, sampling rate sample_clients/num_clients per round)."""
    delta: float | None = None
    """δ; default 1/N with N the number of clients."""
    clip_norm: float = 0.1
    """C: the largest L2 norm of a client's adapter update (initial value when `adaptive`)."""
    adaptive: bool = False
    """Adaptive clipping (Andrew et al. 2021): C follows the `target_quantile` of update norms."""
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    """Step size of the geometric update C ← C·exp(−lr·(b̃ − quantile))."""
    count_noise: float | None = None
    """σ_b of the noisy clipped-update count; default |S|/20 (Andrew et al.)."""
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        w = "privacy.central_dp"
        _check_sigma_or_epsilon(self.noise_multiplier, self.target_epsilon, w)
        _check_delta(self.delta, w)
        _require(self.clip_norm > 0, f"`{w}.clip_norm` (C) must be > 0 (got {self.clip_norm})")
        _require(0 < self.target_quantile < 1, f"`{w}.target_quantile` must be in (0, 1)")
        _require(self.clip_lr > 0, f"`{w}.clip_lr` must be > 0")
        _require(self.count_noise is None or self.count_noise > 0, f"`{w}.count_noise` must be > 0")
        _require(
            self.accountant in ACCOUNTANTS,
            f"`{w}.accountant` is {self.accountant!r}; choose one of {list(ACCOUNTANTS)}",
        )


@dataclass
class SecAggConfig:
    """SecAgg+ (Bell et al. 2020) under the Flower engines: the server learns only the sum of the
    sampled clients' updates. Values are quantised to integers for masking."""

    num_shares: int = 3
    """Shares of each client's secret (the size of its neighbourhood)."""
    reconstruction_threshold: int = 2
    """Shares needed to reconstruct a dropped client's mask."""
    clipping_range: float = 8.0
    """Each update value is clipped to [-range, range] before quantisation."""
    quantization_range: int = 4194304
    """Integers per [-range, range]: the resolution is 2·range / quantization_range."""

    def __post_init__(self) -> None:
        w = "privacy.secagg"
        _require(self.num_shares >= 3, f"`{w}.num_shares` must be >= 3 (got {self.num_shares})")
        _require(
            2 <= self.reconstruction_threshold < self.num_shares,
            f"`{w}.reconstruction_threshold` must be in [2, num_shares) (got "
            f"{self.reconstruction_threshold})",
        )
        _require(self.clipping_range > 0, f"`{w}.clipping_range` must be > 0")
        _require(self.quantization_range >= 2, f"`{w}.quantization_range` must be >= 2")


@dataclass
class PrivacyConfig:
    client_dp: ClientDPConfig | None = None
    central_dp: CentralDPConfig | None = None
    secagg: SecAggConfig | None = None


@dataclass
class SafetyConfig:
    """Clients that misbehave (every engine): the malicious clients train, by the ordinary
    local recipe, on the attack data only; everyone else keeps their share of `data.sources`."""

    malicious_clients: Any = field(default_factory=list)
    """Client ids, e.g. [7, 8, 9], or a fraction of all clients, e.g. 0.3 (that many ids,
    rounded, drawn with the run's seed)."""
    attack: SourceConfig | None = None
    """The malicious clients' training data (a source, typically `local` with a generated
    JSONL); dealt among them, never held out, never given to a benign client."""

    def __post_init__(self) -> None:
        m = self.malicious_clients
        if isinstance(m, (int, float)) and not isinstance(m, bool) and not isinstance(m, list):
            _require(
                0 < float(m) < 1,
                f"`safety.malicious_clients` as a fraction must be in (0, 1), got {m}; or "
                "give client ids, e.g. [7, 8, 9]",
            )
            self.malicious_clients = float(m)
        else:
            _require(
                isinstance(m, list)
                and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in m)
                and len(set(m)) == len(m),
                f"`safety.malicious_clients` must be a fraction in (0, 1) or a list of distinct "
                f"client ids >= 0, got {m!r}",
            )
        _require(
            (self.attack is None) == (not m),
            "`safety` needs both `malicious_clients` and `attack` (the data they train on)",
        )
        if self.attack is not None:
            _require(
                not self.attack.clients and not self.attack.heldout_only,
                "`safety.attack` goes to the malicious clients only: leave out its `clients` "
                "and `heldout_only`",
            )
            self.attack.heldout = 0

    def resolve(self, num_clients: int, seed: int) -> list[int]:
        """The malicious client ids for a run with ``num_clients`` clients."""
        from fedloom.utils import rng_for

        m = self.malicious_clients
        if isinstance(m, float):
            k = max(1, round(m * num_clients))
            return sorted(rng_for(seed, "malicious").sample(range(num_clients), k))
        bad = [c for c in m if c >= num_clients]
        _require(
            not bad,
            f"`safety.malicious_clients` names clients {bad}, but the run has {num_clients} "
            f"(ids 0..{num_clients - 1})",
        )
        return sorted(m)


@dataclass
class TrackingConfig:
    """Where `logging:` trackers write (offline by default)."""

    experiment: str = "fedloom"
    """MLflow experiment / W&B project name."""
    mlflow_uri: str | None = None
    """MLflow store; default `MLFLOW_TRACKING_URI`, else a SQLite file in the run folder."""
    wandb_mode: str = "offline"
    """`offline` (a local folder, `wandb sync` later) or `online`."""

    def __post_init__(self) -> None:
        _require(bool(self.experiment), "`tracking.experiment` is empty")
        _require(
            self.wandb_mode in ("offline", "online"),
            f"`tracking.wandb_mode` is {self.wandb_mode!r}: use offline or online",
        )


@dataclass
class RunConfig:
    seed: int = 0
    task: str = "sft"
    """A name in `fedloom.tasks.TASKS`: `sft` (instruction and multi-turn conversation tuning,
    loss on every assistant turn) or `dpo` (direct preference optimisation on pairs)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    safety: SafetyConfig | None = None
    """Malicious clients and their attack data (`fedloom.safety`)."""
    logging: list[str] = field(default_factory=list)
    """Experiment trackers, any of `tensorboard`, `mlflow`, `wandb` (`fedloom.tracking`):
    the config, every round's metrics, the summary, the adapter and plots."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        """The checks among sections that need no registry (those are in
        :func:`fedloom.config.check_run_config`)."""
        p = self.privacy
        if self.train.packing == "on":
            _require(
                self.task == "sft" and p.client_dp is None,
                "`train.packing: on` applies to SFT without `privacy.client_dp` (DPO pairs and "
                "DP-SGD's per-example gradients train on padded rows); use `packing: auto`",
            )
        _require(
            self.federation.continue_from is None or (p.client_dp is None and p.central_dp is None),
            "`federation.continue_from` does not carry a privacy ledger over: a continued run "
            "would restart its epsilon accounting; run DP schedules as one run",
        )
        if p.client_dp is not None:
            _require(
                not self.model.gradient_checkpointing,
                "`privacy.client_dp` needs per-example activations: set "
                "`model.gradient_checkpointing: false`",
            )
            if self.lora.dropout != 0:
                warnings.warn(
                    f"privacy.client_dp: lora.dropout set from {self.lora.dropout} to 0 "
                    "(DP-SGD runs without dropout)",
                    stacklevel=2,
                )
                self.lora.dropout = 0.0
        if p.central_dp is not None:
            c = p.central_dp
            count_noise = c.count_noise or self.federation.sample_clients / 20
            _require(
                not c.adaptive
                or c.noise_multiplier is None
                or 0 < c.noise_multiplier < 2 * count_noise,
                f"`privacy.central_dp`: adaptive clipping spends part of the privacy on the "
                f"noisy count of unclipped updates (count_noise σ_b = {count_noise:g}); the "
                f"update noise left is (σ⁻² − (2σ_b)⁻²)^(-1/2), which needs 0 < noise_multiplier "
                f"< 2·count_noise = {2 * count_noise:g}; raise count_noise, lower "
                "noise_multiplier, or turn adaptive off",
            )
        if p.secagg is not None:
            _require(
                p.central_dp is None,
                "`privacy.secagg` hides individual updates from the server, so the server "
                "cannot clip them for `privacy.central_dp`; use one of the two (or client_dp "
                "with secagg)",
            )
            _require(
                self.federation.compression == "none",
                "`privacy.secagg` masks full updates: set `federation.compression: none`",
            )
            _require(
                self.federation.sample_clients >= 2,
                "`privacy.secagg` needs at least 2 clients per round: set "
                "`federation.sample_clients` >= 2 (a sum over one client is that client's update)",
            )
        n = self.partition.num_clients
        if self.safety is not None and self.safety.malicious_clients and n is not None:
            mal = self.safety.resolve(n, self.seed)
            _require(
                len(mal) < n,
                f"`safety.malicious_clients` makes all {n} clients malicious; leave some benign",
            )
        for src in self.data.sources:
            _require(
                n is None or not src.clients or max(src.clients) < n,
                f"source {src.name!r} is assigned to clients {src.clients}, but "
                f"`partition.num_clients` is {n} (ids 0..{(n or 1) - 1})",
            )
        if n is not None and self.federation.algorithm != "central":
            _require(
                self.federation.sample_clients <= n,
                f"`federation.sample_clients` ({self.federation.sample_clients}) must be <= "
                f"`partition.num_clients` ({n})",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# ---------------------------------------------------------------------------------------------
# dict -> dataclass with unknown-key and type checks


def _build(cls: type, data: Any, where: str) -> Any:
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, dict):
        hint = getattr(cls, "_shape_hint", "")
        raise ConfigError(
            f"`{where or 'config'}` must be a mapping, got {type(data).__name__} {data!r}"
            + (f"; {hint}" if hint else "")
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key `{prefix}{unknown[0]}`; known keys here: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        kwargs[key] = _coerce(hints[key], value, path)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"`{where or 'config'}`: {e}") from None


def section_from_dict(cls: type[T], data: Any, where: str) -> T:
    """One settings section (any config dataclass) from a dict, with the same unknown-key and
    type checks as a whole config; ``where`` names it in errors (`judge`)."""
    built: T = _build(cls, data, where)
    return built


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        first: ConfigError | None = None
        for arg in args:  # the first member type the value fits (int | str: 5 or "dynamic")
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                first = first or e
        assert first is not None
        raise first
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"`{path}` must be a list, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_coerce(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"`{path}` must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (
        isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    ):
        raise ConfigError(f"`{path}` must be {tp.__name__}, got {value!r}")
    return value


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` override (value parsed as YAML) to a raw config dict."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {key}: empty name in the key; write e.g. federation.rounds=3")
    node = data
    for p in parts[:-1]:
        if node.get(p) is None:  # absent, or a section saved as `null` (e.g. privacy.client_dp)
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: `{p}` is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        what = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"--set {key}: the value {raw!r} is not valid YAML ({what})") from None


def packing_enabled(cfg: RunConfig) -> bool:
    """Whether training micro-batches are packed (``train.packing`` resolved): on for SFT
    without client DP-SGD unless `off` (with gradient checkpointing too: the packed attention
    is on for the backward, where checkpointing recomputes the forward); DPO and DP-SGD train
    on padded rows."""
    return cfg.train.packing != "off" and cfg.task == "sft" and cfg.privacy.client_dp is None
