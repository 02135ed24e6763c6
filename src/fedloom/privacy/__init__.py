"""Privacy: client DP-SGD (Opacus) with per-client accounting, central DP as a strategy wrapper,
secure aggregation (SecAgg+, Flower engines) and a canary audit (`fedloom audit`)."""

from fedloom.privacy.accounting import epsilon, noise_for_epsilon
from fedloom.privacy.central_dp import CentralDP, clip_update, update_norm
from fedloom.privacy.client_dp import ClientDP, PrivacyBudgetSpent, dp_train

__all__ = [
    "CentralDP",
    "ClientDP",
    "PrivacyBudgetSpent",
    "clip_update",
    "dp_train",
    "epsilon",
    "noise_for_epsilon",
    "update_norm",
]
