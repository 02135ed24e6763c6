"""fedloom bench: realistic federations, the methods x federations grid, the report."""

from fedloom.bench.federations import (
    FEDERATIONS,
    FederationError,
    FederationSpec,
    get_federation,
    register_federation,
)

__all__ = [
    "FEDERATIONS",
    "FederationError",
    "FederationSpec",
    "get_federation",
    "register_federation",
]
