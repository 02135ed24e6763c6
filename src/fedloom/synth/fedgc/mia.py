"""Loss-threshold membership inference (Yeom et al. 2018): an example is called a member when
the model's loss on it is low. Scored without choosing a threshold:

    AUC = P(loss(member) < loss(non-member)) + ½·P(equal)       (0.5: the attack learns nothing)
    best balanced accuracy over all thresholds
"""

from __future__ import annotations

from collections.abc import Sequence

from fedloom.synth.fedgc.budget import FedGCError


def mia_auc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    if not members or not nonmembers:
        raise FedGCError("membership inference needs member and non-member losses")
    wins = 0.0
    for m in members:
        for n in nonmembers:
            wins += 1.0 if m < n else 0.5 if m == n else 0.0
    return wins / (len(members) * len(nonmembers))


def mia_best_accuracy(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    """max over thresholds t of ½·(P(member loss <= t) + P(non-member loss > t))."""
    if not members or not nonmembers:
        raise FedGCError("membership inference needs member and non-member losses")
    best = 0.5
    for t in sorted({*members, *nonmembers}):
        tpr = sum(m <= t for m in members) / len(members)
        tnr = sum(n > t for n in nonmembers) / len(nonmembers)
        best = max(best, (tpr + tnr) / 2)
    return best
