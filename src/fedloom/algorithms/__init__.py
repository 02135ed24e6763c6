"""FL algorithms: one file each, registered by name in ``ALGORITHMS``."""

from typing import Any

from fedloom.algorithms import (  # noqa: F401  (imports register the algorithms)
    central,
    fedadagrad,
    fedadam,
    fedavg,
    fedavgm,
    fedprox,
    fedyogi,
    local,
    scaffold,
)
from fedloom.algorithms.aggregate import AggregationError, weighted_average
from fedloom.algorithms.base import (
    ALGORITHMS,
    AlgorithmConfig,
    Broadcast,
    ClientUpdate,
    Strategy,
    register_algorithm,
)

__all__ = [
    "ALGORITHMS",
    "AggregationError",
    "AlgorithmConfig",
    "Broadcast",
    "ClientUpdate",
    "Strategy",
    "build_strategy",
    "register_algorithm",
    "weighted_average",
]


def build_strategy(
    name: str,
    params: dict[str, Any],
    num_clients: int,
    reducer: str = "mean",
    reducer_params: dict[str, Any] | None = None,
    seed: int = 0,
) -> Strategy:
    from fedloom.reducers import build_reducer

    cls = ALGORITHMS[name]
    return cls(cls.config_cls(**params), num_clients, build_reducer(reducer, reducer_params, seed))
