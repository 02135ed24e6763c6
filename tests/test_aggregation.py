"""Every aggregation rule against hand-computed values on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from fedloom.algorithms import ALGORITHMS, AggregationError, ClientUpdate, build_strategy
from fedloom.algorithms.aggregate import weighted_average


def sd(*vals: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(list(vals), dtype=torch.float32)}


def upd(cid: int, n: int, *vals: float, **extras: dict[str, torch.Tensor]) -> ClientUpdate:
    return ClientUpdate(cid, sd(*vals), n, dict(extras))


def test_weighted_average_hand_computed() -> None:
    out = weighted_average([sd(1.0, 2.0), sd(3.0, 6.0)], [1, 3])
    torch.testing.assert_close(out["w"], torch.tensor([2.5, 5.0]))  # (1·1+3·3)/4, (2+18)/4


def test_aggregation_rejects_mismatched_layouts() -> None:
    with pytest.raises(AggregationError, match="different keys"):
        weighted_average([sd(1.0), {"v": torch.zeros(1)}], [1, 1])
    with pytest.raises(AggregationError, match="shape"):
        weighted_average([sd(1.0), sd(1.0, 2.0)], [1, 1])
    with pytest.raises(AggregationError, match="weights"):
        weighted_average([sd(1.0), sd(2.0)], [0, 0])


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "local", "central", "scaffold"])
def test_fedavg_weighted_and_unweighted(name: str) -> None:
    for weighted, expected in [(True, [2.5, 5.0]), (False, [2.0, 4.0])]:
        s = build_strategy(name, {"weighted": weighted}, num_clients=2)
        s.initialize(sd(0.0, 0.0))
        extras = {"delta_control": sd(0.0, 0.0)} if name == "scaffold" else {}
        s.aggregate(0, [upd(0, 1, 1.0, 2.0, **extras), upd(1, 3, 3.0, 6.0, **extras)])
        if name == "local":  # no aggregation: each client keeps its own adapter
            torch.testing.assert_close(s.eval_targets()["client_1"]["w"], torch.tensor([3.0, 6.0]))
        else:
            torch.testing.assert_close(s.global_adapter["w"], torch.tensor(expected))


def test_scaffold_server_control_update() -> None:
    s = build_strategy("scaffold", {}, num_clients=4)
    s.initialize(sd(0.0))
    s.aggregate(0, [upd(0, 1, 1.0, delta_control=sd(2.0)), upd(1, 1, 3.0, delta_control=sd(6.0))])
    # c ← c + (1/N)·Σ Δc_i = 0 + (2 + 6)/4
    torch.testing.assert_close(s.control["w"], torch.tensor([2.0]))  # type: ignore[attr-defined]
    torch.testing.assert_close(s.global_adapter["w"], torch.tensor([2.0]))


def test_scaffold_client_control_update() -> None:
    s = build_strategy("scaffold", {}, num_clients=2)
    s.initialize(sd(1.0))
    s.control = sd(0.5)  # type: ignore[attr-defined]
    bc = s.broadcast(0)
    # c_i⁺ = c_i − c + (x − θ)/(K·lr) = 0.25 − 0.5 + (1 − 0.6)/(2·0.1) = 1.75
    extras, state = s.client_finish(bc, {"control": sd(0.25)}, sd(0.6), steps=2, lr=0.1)
    torch.testing.assert_close(state["control"]["w"], torch.tensor([1.75]))
    torch.testing.assert_close(extras["delta_control"]["w"], torch.tensor([1.5]))


def test_fedavgm_two_rounds() -> None:
    s = build_strategy("fedavgm", {"server_lr": 0.5, "momentum": 0.9}, num_clients=2)
    s.initialize(sd(0.0))
    s.aggregate(0, [upd(0, 1, 1.0), upd(1, 1, 3.0)])
    # Δ = 2, v = 2, x = 0 + 0.5·2 = 1
    torch.testing.assert_close(s.global_adapter["w"], torch.tensor([1.0]))
    s.aggregate(1, [upd(0, 1, 2.0), upd(1, 1, 2.0)])
    # Δ = 1, v = 0.9·2 + 1 = 2.8, x = 1 + 0.5·2.8 = 2.4
    torch.testing.assert_close(s.global_adapter["w"], torch.tensor([2.4]))


def _fedopt_reference(
    name: str, deltas: list[float], eta: float, b1: float, b2: float, tau: float
) -> float:
    """Scalar re-statement of Reddi et al.'s update, for the hand check below."""
    x, m, v = 0.0, 0.0, tau**2
    for d_abs in deltas:
        d = d_abs - x  # clients return x_i = d_abs; Δ = x_i − x
        m = b1 * m + (1 - b1) * d
        if name == "fedadagrad":
            v = v + d * d
        elif name == "fedadam":
            v = b2 * v + (1 - b2) * d * d
        else:
            v = v - (1 - b2) * d * d * math.copysign(1.0, v - d * d)
        x = x + eta * m / (math.sqrt(v) + tau)
    return x


def test_fedadam_round_one_by_hand() -> None:
    s = build_strategy(
        "fedadam", {"server_lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.01}, num_clients=2
    )
    s.initialize(sd(0.0))
    s.aggregate(0, [upd(0, 1, 1.0), upd(1, 3, 3.0)])
    # Δ = 2.5; m = 0.25; v = 0.99·1e-4 + 0.01·6.25 = 0.062599; x = 0.1·0.25/(√0.062599 + 0.01)
    expected = 0.1 * 0.25 / (math.sqrt(0.062599) + 0.01)
    assert s.global_adapter["w"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", ["fedadagrad", "fedadam", "fedyogi"])
def test_fedopt_two_rounds(name: str) -> None:
    hp = {"server_lr": 0.1, "beta1": 0.5, "beta2": 0.9, "tau": 0.01, "weighted": False}
    s = build_strategy(name, hp, num_clients=2)
    s.initialize(sd(0.0))
    s.aggregate(0, [upd(0, 1, 1.0), upd(1, 5, 3.0)])  # unweighted mean 2.0
    s.aggregate(1, [upd(0, 1, 0.0), upd(1, 5, 1.0)])  # unweighted mean 0.5
    expected = _fedopt_reference(name, [2.0, 0.5], 0.1, 0.5, 0.9, 0.01)
    assert s.global_adapter["w"].item() == pytest.approx(expected, rel=1e-5)


def test_fedadagrad_two_rounds_by_hand() -> None:
    s = build_strategy(
        "fedadagrad", {"server_lr": 1.0, "beta1": 0.0, "tau": 0.5, "weighted": False}, num_clients=1
    )
    s.initialize(sd(0.0))
    s.aggregate(0, [upd(0, 1, 2.0)])
    # Δ=2, m=2, v=0.25+4=4.25, x = 2/(√4.25+0.5)
    x1 = 2 / (math.sqrt(4.25) + 0.5)
    assert s.global_adapter["w"].item() == pytest.approx(x1, rel=1e-6)
    s.aggregate(1, [upd(0, 1, x1 + 1.0)])
    # Δ=1, m=1, v=5.25, x = x1 + 1/(√5.25+0.5)
    assert s.global_adapter["w"].item() == pytest.approx(x1 + 1 / (math.sqrt(5.25) + 0.5), rel=1e-6)


def test_registry_lists_every_algorithm() -> None:
    assert set(ALGORITHMS) == {
        "fedavg",
        "fedprox",
        "scaffold",
        "fedavgm",
        "fedadagrad",
        "fedyogi",
        "fedadam",
        "local",
        "central",
    }
    with pytest.raises(ValueError, match="already registered"):
        from fedloom.algorithms.base import register_algorithm

        register_algorithm("fedavg")(type("Dup", (ALGORITHMS["fedavg"],), {}))


def test_local_baseline_trains_the_same_clients_every_round() -> None:
    """FedLLM-Bench's local baseline: the first round's sample trains alone at every round (a
    random sample each round would give each client ~rounds*k/n visits)."""
    import random

    s = build_strategy("local", {}, num_clients=10)
    s.initialize(sd(0.0))
    rng = random.Random(0)
    first = s.sample(rng, 3)
    assert len(first) == 3
    assert all(s.sample(rng, 3) == first for _ in range(5))
    assert s.sample(rng, 3, exclude={first[0]}) == first[1:]  # a client out of privacy budget
    assert s.state_dict()["scored"] == first  # checkpointed: a resumed run keeps its clients
    assert s.every_round and not build_strategy("fedavg", {}, num_clients=10).every_round


def test_scaffold_control_goes_through_the_reducer() -> None:
    """SCAFFOLD's control deltas reach every client's next steps: under a robust reducer they
    are reduced by the same rule (a plain mean let one poisoned control through)."""
    ups = [
        upd(0, 1, 1.0, delta_control=sd(1.0)),
        upd(1, 1, 1.0, delta_control=sd(2.0)),
        upd(2, 1, 1.0, delta_control=sd(100.0)),
    ]
    plain = build_strategy("scaffold", {}, num_clients=6)
    plain.initialize(sd(0.0))
    plain.aggregate(0, ups)
    # c = 0 + (3/6)·mean(1, 2, 100) = 17.1667
    torch.testing.assert_close(plain.control["w"], torch.tensor([103.0 / 6]))  # type: ignore[attr-defined]
    med = build_strategy("scaffold", {}, num_clients=6, reducer="median")
    med.initialize(sd(0.0))
    med.aggregate(0, ups)
    # c = 0 + (3/6)·median(1, 2, 100) = 1.0
    torch.testing.assert_close(med.control["w"], torch.tensor([1.0]))  # type: ignore[attr-defined]


def test_scaffold_control_under_a_stateful_reducer_uses_its_shares() -> None:
    """FoolsGold learns from the adapters it reduces: the control deltas are combined with the
    shares it gave each client this round, not passed through it a second time."""
    s = build_strategy("scaffold", {}, num_clients=4, reducer="foolsgold")
    s.initialize(sd(0.0, 0.0))
    ups = [
        upd(0, 1, 1.0, 0.0, delta_control=sd(4.0, 0.0)),
        upd(1, 1, 1.0, 0.1, delta_control=sd(8.0, 0.0)),
        upd(2, 1, -1.0, 1.0, delta_control=sd(0.0, 2.0)),
    ]
    s.aggregate(0, ups)
    share = {int(k): v for k, v in s.last_aggregation["share"].items()}
    expected = sum(share[i] * u.extras["delta_control"]["w"] for i, u in enumerate(ups))
    expected = expected / sum(share.values()) * 3 / 4
    torch.testing.assert_close(s.control["w"], expected.float())  # type: ignore[attr-defined]
    assert len(s.reducer.state_dict()["history"]) == 3  # one update per client in its history
