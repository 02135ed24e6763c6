"""Run configuration: load a YAML file or a dict into validated settings, and check them against
the registries.

:mod:`fedloom.settings` holds the dataclasses and every check that needs no registry; this
module sits above the registries (algorithms, reducers, codecs, partitioners, data sources,
suites, tasks) and adds the checks that need them: names, each algorithm's and reducer's own
parameters, and the rules that depend on an algorithm's or reducer's properties (central DP and
SecAgg need a mean-based algorithm, robust reducers need individual updates). Every entry point
loads configs through :func:`load_config` / :func:`config_from_dict`; code that builds a
:class:`RunConfig` itself calls :func:`check_run_config` (the engine does, before a run).
An unknown key or an impossible value raises :class:`ConfigError` naming the field and the fix;
the resolved config is saved next to every run as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

import fedloom.data.catalog  # noqa: F401  (registers the package sources)
from fedloom.algorithms import ALGORITHMS
from fedloom.compression import CODECS
from fedloom.data.filters import FilterError, parse_condition
from fedloom.data.partition import PARTITIONERS
from fedloom.data.sources import LOCAL_FIELDS, SOURCES, DataSourceError, check_local_file
from fedloom.eval.suites import SUITES
from fedloom.reducers import REDUCERS, reducer_config
from fedloom.settings import (
    CentralDPConfig,
    ClientDPConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    FederationConfig,
    LoraSettings,
    ModelConfig,
    PartitionConfig,
    PrivacyConfig,
    RunConfig,
    SafetyConfig,
    SecAggConfig,
    SourceConfig,
    TrainConfig,
    _build,
    _require,
    apply_override,
    packing_enabled,
)
from fedloom.tasks import TASKS

__all__ = [
    "CentralDPConfig",
    "ClientDPConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FederationConfig",
    "LoraSettings",
    "ModelConfig",
    "PartitionConfig",
    "PrivacyConfig",
    "RunConfig",
    "SafetyConfig",
    "SecAggConfig",
    "SourceConfig",
    "TrainConfig",
    "_build",
    "_require",
    "apply_override",
    "check_run_config",
    "check_source",
    "config_from_dict",
    "load_config",
    "packing_enabled",
]


def check_source(src: SourceConfig, where: str = "data.sources[]") -> None:
    """A data source's name (a registered source or `local`), schema, `where` filters and, for
    `local`, its file."""
    for key, want in src.where.items():
        try:
            parse_condition(key, want)
        except FilterError as e:
            raise ConfigError(f"`where` of source {src.name!r}: {e}") from None
    _require(
        src.name == "local" or src.name in SOURCES,
        f"`{where}.name` is {src.name!r}: not a data source; choose one of "
        f"{sorted(SOURCES)} or `local` (see `fedloom data list`)",
    )
    _require(
        src.schema in LOCAL_FIELDS,
        f"`schema` of source {src.name!r} is {src.schema!r}; choose one of {list(LOCAL_FIELDS)}",
    )
    if src.name == "local":
        _require(
            src.path is not None,
            "source `local` needs `path:` (a .json, .jsonl, .csv or .parquet file) and "
            "optionally `columns:`",
        )
        try:
            check_local_file(str(src.path))
        except DataSourceError as e:
            raise ConfigError(f"`{where}.path`: {e}") from None


def check_sources_in(obj: Any, where: str = "") -> None:
    """:func:`check_source` on every :class:`SourceConfig` inside a settings dataclass (a
    pipeline's own section holds some)."""
    if isinstance(obj, SourceConfig):
        check_source(obj, where or "source")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            check_sources_in(getattr(obj, f.name), f"{where}.{f.name}".strip("."))
    elif isinstance(obj, list | tuple):
        for i, x in enumerate(obj):
            check_sources_in(x, f"{where}[{i}]")


def check_federation(fc: FederationConfig) -> None:
    """The algorithm, the reducer and the codec by name, with their own parameters."""
    _require(
        fc.compression in CODECS,
        f"`federation.compression` is {fc.compression!r}; choose one of {sorted(CODECS)}",
    )
    _require(
        fc.reducer in REDUCERS,
        f"`federation.reducer` is {fc.reducer!r}; choose one of {sorted(REDUCERS)}",
    )
    try:
        reducer = reducer_config(fc.reducer, fc.reducer_params)
    except ValueError as e:
        known = [f.name for f in dataclasses.fields(REDUCERS[fc.reducer].config_cls)]
        raise ConfigError(
            f"`federation.reducer_params` for {fc.reducer!r}: {e}; known parameters: {known}"
        ) from None
    _require(
        reducer.min_clients() <= fc.sample_clients,
        f"`federation.reducer: {fc.reducer}` with {fc.reducer_params} needs at least "
        f"{reducer.min_clients()} updates per round; raise `federation.sample_clients` "
        f"(now {fc.sample_clients}) or lower `f`",
    )
    _require(
        fc.algorithm in ALGORITHMS,
        f"`federation.algorithm` is {fc.algorithm!r}; choose one of {sorted(ALGORITHMS)}",
    )
    try:
        ALGORITHMS[fc.algorithm].config_cls(**fc.params)
    except (TypeError, ValueError) as e:
        known = [f.name for f in dataclasses.fields(ALGORITHMS[fc.algorithm].config_cls)]
        raise ConfigError(
            f"`federation.params` for {fc.algorithm!r}: {e}; known parameters: {known}"
        ) from None


def check_run_config(cfg: RunConfig) -> RunConfig:
    """Every registry check of a run config (names, parameters, and the rules that need an
    algorithm's or reducer's properties); returns ``cfg``."""
    _require(cfg.task in TASKS, f"`task` is {cfg.task!r}; choose one of {sorted(TASKS)}")
    from fedloom.tracking import TRACKERS

    bad = [n for n in cfg.logging if n not in TRACKERS]
    _require(not bad, f"`logging` has unknown {bad}; choose from {sorted(TRACKERS)}")
    _require(len(set(cfg.logging)) == len(cfg.logging), "`logging` names a tracker twice")
    for src in cfg.data.sources:
        check_source(src)
    if cfg.safety is not None and cfg.safety.attack is not None:
        check_source(cfg.safety.attack, "safety.attack")
    part = cfg.partition
    _require(
        part.strategy in PARTITIONERS,
        f"`partition.strategy` is {part.strategy!r}; choose one of {sorted(PARTITIONERS)}",
    )
    _require(
        part.num_clients is not None or part.strategy == "natural",
        f"`partition.num_clients` is required for strategy {part.strategy!r}",
    )
    check_federation(cfg.federation)
    unknown = [s for s in cfg.eval.suites if s not in SUITES]
    _require(not unknown, f"`eval.suites` has unknown {unknown}; choose from {sorted(SUITES)}")
    p, algo = cfg.privacy, cfg.federation.algorithm
    mean_based = sorted(a for a, c in ALGORITHMS.items() if c.mean_only)
    if p.central_dp is not None:
        why = (
            "also uploads control variates"
            if algo == "scaffold"
            else "does not average client updates"
        )
        _require(
            ALGORITHMS[algo].mean_only,
            f"`privacy.central_dp` wraps algorithms whose server step reads only the mean "
            f"client update ({', '.join(mean_based)}); {algo!r} {why}",
        )
    robust = REDUCERS[cfg.federation.reducer].robust
    _require(
        not robust or (p.secagg is None and p.central_dp is None),
        f"`federation.reducer: {cfg.federation.reducer}` reads every client's update, "
        "which `privacy.secagg` hides and `privacy.central_dp` replaces by a clipped noisy "
        "mean; use `reducer: mean` with those, or drop them",
    )
    _require(
        not robust or ALGORITHMS[algo].mean_only or algo == "scaffold",
        f"`federation.reducer` applies to algorithms that average client adapters; "
        f"{algo!r} does not",
    )
    if p.secagg is not None:
        _require(
            ALGORITHMS[algo].mean_only,
            f"`privacy.secagg` needs an algorithm that reads only the sum of client "
            f"updates ({', '.join(mean_based)}); {algo!r} does not",
        )
    if cfg.safety is not None and cfg.safety.malicious_clients:
        _require(
            not ALGORITHMS[algo].pooled_data,
            f"`safety.malicious_clients` needs clients: {algo!r} pools all data on one",
        )
    return cfg


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """A raw config mapping -> a checked :class:`RunConfig`."""
    cfg: RunConfig = _build(RunConfig, data, "")
    return check_run_config(cfg)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} is not a file")
        try:
            loaded = yaml.safe_load(p.read_bytes().decode("utf-8-sig"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not a UTF-8 text file (byte {e.start})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = getattr(e, "problem", None) or str(e)
            raise ConfigError(f"{p}: not valid YAML{where} ({what})") from None
        except OSError as e:
            raise ConfigError(f"config file {str(p)!r} cannot be read ({e.strerror})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{p}: the top level must be a mapping of sections (model:, data:, ...), "
                f"got a {type(loaded).__name__}"
            )
        data = loaded or {}
    for o in overrides or []:
        apply_override(data, o)
    return config_from_dict(data)
