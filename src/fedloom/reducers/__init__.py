"""Reducers: how the server combines the sampled clients' updates (`federation.reducer`).
One file per rule, registered by name in ``REDUCERS``; any reducer runs under any server
optimiser (see :mod:`fedloom.reducers.base`)."""

from fedloom.reducers import (  # noqa: F401  (imports register the reducers)
    dnc,
    foolsgold,
    krum,
    mean,
    median,
    norm_bound,
    residual,
    trimmed_mean,
)
from fedloom.reducers.base import (
    REDUCERS,
    Reducer,
    ReducerConfig,
    Reduction,
    build_reducer,
    delta_matrix,
    flatten,
    reducer_config,
    register_reducer,
    unflatten,
    update_stats,
)

__all__ = [
    "REDUCERS",
    "Reducer",
    "ReducerConfig",
    "Reduction",
    "build_reducer",
    "reducer_config",
    "delta_matrix",
    "flatten",
    "register_reducer",
    "unflatten",
    "update_stats",
]
