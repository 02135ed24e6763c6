"""Every reducer against hand-computed values, under more than one server optimiser."""

from __future__ import annotations

import math

import pytest
import torch

from fedloom.algorithms import AggregationError, ClientUpdate, build_strategy
from fedloom.config import ConfigError, load_config
from fedloom.reducers import REDUCERS, build_reducer, delta_matrix, unflatten, update_stats
from fedloom.reducers.dnc import dnc_keep, dnc_scores
from fedloom.reducers.foolsgold import foolsgold_weights
from fedloom.reducers.krum import krum_scores, multi_krum
from fedloom.reducers.median import coordinate_median
from fedloom.reducers.norm_bound import norm_bounded_mean
from fedloom.reducers.trimmed_mean import trimmed_mean


def M(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_median_odd_even_and_ties() -> None:
    torch.testing.assert_close(
        coordinate_median(M([1, 9], [5, 2], [3, 4])), torch.tensor([3.0, 4.0])
    )
    # even count: mean of the two middle values (numpy / Flower fedmedian)
    torch.testing.assert_close(
        coordinate_median(M([1, 0], [2, 0], [10, 5], [4, 5])), torch.tensor([3.0, 2.5])
    )
    torch.testing.assert_close(
        coordinate_median(M([2, 2], [2, 2], [7, 2])), torch.tensor([2.0, 2.0])
    )


def test_trimmed_mean_hand_computed_and_bounds() -> None:
    X = M([1.0], [2.0], [3.0], [4.0], [100.0])
    torch.testing.assert_close(trimmed_mean(X, 0.2), torch.tensor([3.0]))  # drop 1 and 100
    torch.testing.assert_close(trimmed_mean(X, 0.0), torch.tensor([22.0]))  # plain mean
    torch.testing.assert_close(trimmed_mean(X, 0.1), torch.tensor([22.0]))  # floor(0.5) = 0
    with pytest.raises(AggregationError, match="beta"):
        trimmed_mean(X, 0.5)


def test_trimmed_mean_small_n_ok() -> None:
    torch.testing.assert_close(trimmed_mean(M([1.0], [3.0]), 0.4), torch.tensor([2.0]))


def test_krum_scores_and_selection() -> None:
    # points on a line: 0, 1, 2, 10, 20; f = 1 -> n - f - 2 = 2 nearest neighbours
    X = M([0.0], [1.0], [2.0], [10.0], [20.0])
    # 0: 1 + 4 = 5; 1: 1 + 1 = 2; 2: 1 + 4 = 5; 10: 64 + 81 = 145; 20: 100 + 324 = 424
    torch.testing.assert_close(
        krum_scores(X, 1), torch.tensor([5.0, 2.0, 5.0, 145.0, 424.0], dtype=torch.float64)
    )
    upd, chosen = multi_krum(X, [1] * 5, f=1, m=1)
    assert chosen == [1] and upd.tolist() == [1.0]
    upd, chosen = multi_krum(X, [1, 1, 2, 1, 1], f=1, m=3)  # 1, 0, 2 (tie 0/2 -> both in)
    assert chosen == [0, 1, 2]
    torch.testing.assert_close(upd, torch.tensor([(0 + 1 + 2 * 2) / 4.0]))


def test_krum_ties_go_to_the_lower_position() -> None:
    X = M([0.0], [1.0], [0.0], [1.0])  # f = 1 -> one neighbour each: every score 0
    _, chosen = multi_krum(X, [1] * 4, f=1, m=1)
    assert chosen == [0]


def test_krum_f_bounds() -> None:
    with pytest.raises(AggregationError, match="f \\+ 3"):
        krum_scores(M([0.0], [1.0], [2.0], [3.0]), 2)
    with pytest.raises(AggregationError, match="m in"):
        multi_krum(M([0.0], [1.0], [2.0], [3.0]), [1] * 4, f=1, m=4)
    r = build_reducer("krum", {"f": 1}).reduce(
        M([0.0], [1.0], [2.0], [3.0]), [1] * 4, [4, 5, 6, 7], 0
    )
    assert r.info["guarantee"] is False  # n = 4 is not > 2f + 2 = 4
    with pytest.raises(AggregationError, match="multikrum"):
        build_reducer("krum", {"f": 1, "m": 2}).reduce(
            M([0.0], [1.0], [2.0], [3.0]), [1] * 4, [0, 1, 2, 3], 0
        )


def test_norm_bound_hand_computed() -> None:
    X = M([3.0, 4.0], [0.6, 0.8])  # norms 5 and 1
    upd, scale = norm_bounded_mean(X, [1, 1], 1.0)
    assert scale == pytest.approx([0.2, 1.0])
    torch.testing.assert_close(upd, torch.tensor([0.6, 0.8]))  # (0.6+0.6)/2, (0.8+0.8)/2
    # default bound: the round's median norm (of 1, 5, 3 -> 3)
    r = build_reducer("norm_bound").reduce(
        M([1.0, 0.0], [0.0, 5.0], [3.0, 0.0]), [1] * 3, [0, 1, 2], 0
    )
    assert r.info["max_norm"] == pytest.approx(3.0) and r.info["clipped"] == [1]
    torch.testing.assert_close(r.update, torch.tensor([4.0 / 3, 1.0]))
    with pytest.raises(AggregationError, match="> 0"):
        norm_bounded_mean(X, [1, 1], 0.0)


def test_dnc_drops_the_outlier() -> None:
    X = M([1.0, 1.0], [1.1, 0.9], [0.9, 1.1], [1.0, 1.0], [10.0, -10.0])
    # centred on the mean (2.8, -1.2), the top singular direction is the outlier's; its score is largest
    s = dnc_scores(X)
    assert int(s.argmax()) == 4
    keep = dnc_keep(X, f=1, subsample=10, iters=2, c=1.0, gen=torch.Generator().manual_seed(0))
    assert keep == [0, 1, 2, 3]
    r = build_reducer("dnc", {"f": 1}).reduce(X, [1, 1, 1, 1, 1], [10, 11, 12, 13, 14], 0)
    assert r.info["selected"] == [10, 11, 12, 13] and r.weights[4] == 0.0
    torch.testing.assert_close(r.update, torch.tensor([1.0, 1.0]))
    with pytest.raises(AggregationError, match="leaving none"):
        dnc_keep(X[:1], f=1, subsample=2, iters=1, c=1.0, gen=torch.Generator())


def test_dnc_scores_hand_computed() -> None:
    # rows ±(1, 0) and 0: centred already; top direction (1, 0); scores x², i.e. 1, 1, 0
    s = dnc_scores(M([1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]))
    torch.testing.assert_close(s, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))


def test_foolsgold_hand_computed() -> None:
    # two sybils with identical histories, one honest orthogonal client:
    # cs = [[0,1,0],[1,0,0],[0,0,0]]; α = 1 − max_j cs = [0, 0, 1] -> /max -> 0.99 -> logit
    # ln(99) + 0.5 > 1 -> 1; the sybils: ln(0) -> 0
    assert foolsgold_weights(M([1.0, 0.0], [1.0, 0.0], [0.0, 1.0])) == [0.0, 0.0, 1.0]
    # three mutually orthogonal clients: α = 1 each -> 0.99 -> all weight 1
    assert foolsgold_weights(M([1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0])) == [1.0, 1.0, 1.0]
    # cos 0.6 between a and b, c orthogonal: α = [0.4, 0.4, 1] -> [0.4, 0.4, 0.99]
    # logit: ln(0.4/0.6) + 0.5 = 0.0945
    w = foolsgold_weights(M([1.0, 0.0, 0], [0.6, 0.8, 0], [0, 0, 1.0]))
    assert w[:2] == pytest.approx([math.log(0.4 / 0.6) + 0.5] * 2, abs=1e-6) and w[2] == 1.0


def test_foolsgold_keeps_history_across_rounds_and_checkpoints() -> None:
    fg = build_reducer("foolsgold")
    fg.reduce(M([1.0, 0.0], [1.0, 0.0], [0.0, 1.0]), [1, 1, 1], [0, 1, 2], 0)
    state = fg.state_dict()
    torch.testing.assert_close(state["history"]["0"], torch.tensor([1.0, 0.0]))
    fg2 = build_reducer("foolsgold")
    fg2.load_state_dict(state)
    # round 2: client 0 now sends (0, 1); its history (1, 1) is no longer a copy of client 1's
    r = fg2.reduce(M([0.0, 1.0], [1.0, 0.0]), [1, 1], [0, 1], 1)
    torch.testing.assert_close(fg2.history["0"], torch.tensor([1.0, 1.0]))
    assert sum(r.weights) == pytest.approx(1.0)
    # every client a perfect copy of another: no update at all
    r = build_reducer("foolsgold").reduce(M([1.0], [1.0]), [1, 1], [0, 1], 0)
    assert r.weights == [0.0, 0.0] and r.update.tolist() == [0.0]


def test_update_stats_and_flat_roundtrip() -> None:
    base = {"a": torch.zeros(2, 2), "b": torch.zeros(3)}
    s1 = {"a": torch.ones(2, 2), "b": torch.zeros(3)}
    s2 = {"a": torch.zeros(2, 2), "b": torch.tensor([0.0, 0.0, 2.0])}
    X, keys = delta_matrix([s1, s2], base)
    assert keys == ["a", "b"] and X.shape == (2, 7)
    norms, cos = update_stats(X)
    assert norms == pytest.approx([2.0, 2.0])
    # mean = (0.5,0.5,0.5,0.5,0,0,1), |mean| = sqrt(2); x1·mean = 2 -> cos = 2 / (2·sqrt 2)
    assert cos == pytest.approx([1 / math.sqrt(2)] * 2)
    back = unflatten(X[0], base, keys)
    torch.testing.assert_close(back["a"], s1["a"])


@pytest.mark.parametrize("algorithm", ["fedavg", "fedavgm", "fedadam"])
def test_reducer_runs_under_any_server_optimiser(algorithm: str) -> None:
    """Median of (0, 1, 100) is 1: FedAvg moves to 1; FedAvgM's first step (v = Δ) too; FedAdam
    takes its step from the median update, not from the mean (33.67)."""
    s = build_strategy(algorithm, {}, 3, "median")
    s.initialize({"w": torch.zeros(1)})
    s.aggregate(
        0, [ClientUpdate(c, {"w": torch.tensor([v])}, 1) for c, v in enumerate([0.0, 1.0, 100.0])]
    )
    m = build_strategy(algorithm, {}, 3, "mean")
    m.initialize({"w": torch.zeros(1)})
    m.aggregate(0, [ClientUpdate(0, {"w": torch.tensor([1.0])}, 1)])  # the mean of one update = 1
    torch.testing.assert_close(s.global_adapter["w"], m.global_adapter["w"])
    assert s.last_aggregation["reducer"] == "median"
    assert s.last_aggregation["update_norm"] == {"0": 0.0, "1": 1.0, "2": 100.0}


def test_mean_reducer_is_the_old_weighted_average_exactly() -> None:
    s = build_strategy("fedavg", {}, 2)
    s.initialize({"w": torch.zeros(2, dtype=torch.bfloat16)})
    ups = [
        ClientUpdate(0, {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16)}, 1),
        ClientUpdate(1, {"w": torch.tensor([3.0, 6.0], dtype=torch.bfloat16)}, 3),
    ]
    s.aggregate(0, ups)
    assert s.global_adapter["w"].dtype == torch.bfloat16
    torch.testing.assert_close(
        s.global_adapter["w"], torch.tensor([2.5, 5.0], dtype=torch.bfloat16)
    )
    assert s.last_aggregation["share"] == {"0": 0.25, "1": 0.75}


def test_reducer_needs_enough_updates() -> None:
    s = build_strategy("fedavg", {}, 3, "krum", {"f": 1})
    s.initialize({"w": torch.zeros(1)})
    with pytest.raises(AggregationError, match="at least 4"):
        s.aggregate(0, [ClientUpdate(c, {"w": torch.ones(1)}, 1) for c in range(3)])


def test_every_reducer_is_registered_and_tested_here() -> None:
    assert set(REDUCERS) == {
        "mean",
        "median",
        "trimmed_mean",
        "krum",
        "multikrum",
        "norm_bound",
        "dnc",
        "foolsgold",
        "residual",
    }


def test_config_refuses_reducers_with_secagg_and_central_dp(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="secagg"):
        load_config(None, ["federation.reducer=median", "privacy.secagg={}"])
    with pytest.raises(ConfigError, match="central_dp"):
        load_config(
            None,
            [
                "federation.reducer=krum",
                "federation.sample_clients=4",
                "partition.num_clients=4",
                "privacy.central_dp={noise_multiplier: 1.0}",
            ],
        )
    with pytest.raises(ConfigError, match="needs at least 4"):
        load_config(None, ["federation.reducer=krum", "federation.reducer_params={f: 1}"])
    with pytest.raises(ConfigError, match="known parameters"):
        load_config(None, ["federation.reducer=trimmed_mean", "federation.reducer_params={b: 1}"])
    with pytest.raises(ConfigError, match="choose one of"):
        load_config(None, ["federation.reducer=medain"])
    cfg = load_config(
        None, ["federation.reducer=trimmed_mean", "federation.reducer_params={beta: 0.1}"]
    )
    assert cfg.federation.reducer == "trimmed_mean"


def test_reducer_takes_the_run_seed_once_and_config_checks_need_no_reducer() -> None:
    from fedloom.reducers import build_reducer, reducer_config

    X = torch.randn(6, 40, generator=torch.Generator().manual_seed(3))
    w = [1.0] * 6
    ids = list(range(6))
    params = {"f": 1, "subsample": 5}
    by_run = build_reducer("dnc", params, seed=5)
    explicit = build_reducer("dnc", params | {"seed": 5})
    assert by_run.seed == 5 and explicit.cfg.seed == 5  # type: ignore[attr-defined]
    a, b = by_run.reduce(X, w, ids, 2), explicit.reduce(X, w, ids, 2)
    assert torch.equal(a.update, b.update) and a.weights == b.weights
    # the minimum sample size is a property of the settings alone
    assert reducer_config("krum", {"f": 2}).min_clients() == 5
    assert reducer_config("dnc", {"f": 2, "c": 1.5}).min_clients() == 4
    assert reducer_config("median").min_clients() == 1


def test_residual_reweighting_by_hand() -> None:
    """Fu et al.'s residual-based reweighting on one coordinate, values 0, 1, 2, 3, 100: the
    repeated-median line through the sorted values is y = rank (per-point slope medians 1, 1, 1,
    1, 41 -> 1; intercept med 2 - 1*2 = 0); residuals 0, 0, 0, 0, 96; τ = 1e-7 (the median of
    the four largest |residuals| is 0), so the outlier's weight K*h/e is ~0 and its value is
    replaced by the line's (4); the others' weights are 1. Confidences w*std(w): equal for the
    four, ~0 for the outlier -> shares 1/4 each; update (0+1+2+3)/4 = 1.5."""
    from fedloom.reducers.residual import repeated_median_line

    slope, intercept = repeated_median_line(torch.tensor([[3.0, 100.0, 0.0, 2.0, 1.0]]))
    assert (slope.item(), intercept.item()) == (1.0, 0.0)
    r = build_reducer("residual")
    red = r.reduce(torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]]), [1] * 5, range(5), 0)
    torch.testing.assert_close(red.update, torch.tensor([1.5]))
    assert red.weights[:4] == pytest.approx([0.25] * 4) and red.weights[4] < 1e-12
    assert red.info["values_replaced"] == 1
    # clients that agree everywhere count the same (no weight deviates: std 0)
    same = r.reduce(torch.tensor([[1.0, 2.0]] * 3), [5, 1, 1], [0, 1, 2], 0)
    torch.testing.assert_close(same.update, torch.tensor([1.0, 2.0]))
    assert same.weights == pytest.approx([1 / 3] * 3)
    # chunking the coordinates changes nothing
    X = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    X[2] += 5.0
    whole = build_reducer("residual").reduce(X, [1] * 6, range(6), 0)
    parts = build_reducer("residual", {"chunk": 7}).reduce(X, [1] * 6, range(6), 0)
    torch.testing.assert_close(whole.update, parts.update)
    assert whole.weights[2] < min(w for i, w in enumerate(whole.weights) if i != 2)
    assert build_reducer("residual").min_clients() == 3
