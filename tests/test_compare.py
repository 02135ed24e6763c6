"""The paired, seed-pooled comparison behind every result table: values worked out by hand."""

from __future__ import annotations

import math

import pytest

from fedloom.experiment import CompareError, compare, verdict_of


def test_constant_differences_collapse_the_interval() -> None:
    c = compare({0: [1.0, 2.0, 3.0]}, {0: [0.5, 1.5, 2.5]}, metric="acc")
    assert c.diff == pytest.approx(0.5) and (c.low, c.high) == pytest.approx((0.5, 0.5))
    assert c.arm_mean == pytest.approx(2.0) and c.reference_mean == pytest.approx(1.5)
    assert c.verdict == "better" and c.n_items == 3 and c.unpaired == 0


def test_two_items_one_seed_by_hand() -> None:
    # differences [0, 2]: a resampled mean is 0 (1/4), 1 (1/2) or 2 (1/4) -> [0, 2]
    c = compare({0: [0.0, 2.0]}, {0: [0.0, 0.0]}, resamples=4000)
    assert c.diff == pytest.approx(1.0)
    assert (c.low, c.high) == (0.0, 2.0)
    assert c.verdict == "unresolved"  # the interval touches 0


def test_seeds_are_resampled_too_by_hand() -> None:
    # seed 0 differs by 1 on every item, seed 1 by 3: a replicate draws two seeds with
    # replacement -> mean 1 (1/4), 2 (1/2), 3 (1/4); items add no noise (constant in a seed)
    arm = {0: [1.0, 1.0, 1.0], 1: [3.0, 3.0]}
    ref = {0: [0.0, 0.0, 0.0], 1: [0.0, 0.0]}
    c = compare(arm, ref, resamples=4000)
    assert c.diff == pytest.approx(2.0)
    assert (c.low, c.high) == (1.0, 3.0)
    assert c.per_seed[0].diff == 1.0 and c.per_seed[1].n == 2 and c.seeds == [0, 1]
    assert c.verdict == "better"


def test_the_mean_is_over_seeds_not_items() -> None:
    c = compare({0: [1.0] * 4, 1: [3.0]}, {0: [0.0] * 4, 1: [0.0]})
    assert c.diff == pytest.approx(2.0)  # (1 + 3) / 2, not (4 + 3) / 5


def test_items_pair_by_id_and_the_rest_is_counted() -> None:
    c = compare({0: {"a": 1.0, "b": 2.0, "c": 5.0}}, {0: {"a": 0.0, "b": 4.0, "d": 9.0}})
    assert c.diff == pytest.approx(-0.5)  # (1 - 0 + 2 - 4) / 2
    assert c.arm_mean == pytest.approx(1.5) and c.reference_mean == pytest.approx(2.0)
    assert c.unpaired == 2 and c.n_items == 2
    # a seed on one side only is not paired
    c2 = compare({0: [1.0], 1: [5.0]}, {0: [0.0]})
    assert c2.seeds == [0] and c2.unpaired == 1


def test_lower_is_better_flips_the_verdict() -> None:
    kw = {"resamples": 500}
    assert compare({0: [1.0, 1.1]}, {0: [2.0, 2.0]}, lower_is_better=True, **kw).verdict == "better"
    assert compare({0: [1.0, 1.1]}, {0: [2.0, 2.0]}, **kw).verdict == "worse"


@pytest.mark.parametrize(
    ("low", "high", "lower", "want"),
    [
        (-2.0, -1.0, True, "better"),
        (-2.0, -1.0, False, "worse"),
        (1.0, 2.0, True, "worse"),
        (1.0, 2.0, False, "better"),
        (-1.0, 1.0, False, "unresolved"),
        (0.0, 1.0, False, "unresolved"),
        (0.0, 0.0, True, "unresolved"),
    ],
)
def test_verdict_from_the_interval(low: float, high: float, lower: bool, want: str) -> None:
    assert verdict_of(low, high, lower) == want


def test_same_seed_same_interval_and_bad_input() -> None:
    a, r = {0: [0.3, 0.1, 0.7, 0.2], 1: [0.5, 0.4]}, {0: [0.2, 0.2, 0.1, 0.3], 1: [0.1, 0.6]}
    c1, c2 = compare(a, r, seed=7), compare(a, r, seed=7)
    assert (c1.low, c1.high) == (c2.low, c2.high)
    assert c1.low <= c1.diff <= c1.high
    with pytest.raises(CompareError, match="no seed has an item"):
        compare({0: {"a": 1.0}}, {0: {"b": 1.0}})
    with pytest.raises(CompareError, match="NaN"):
        compare({0: [math.nan]}, {0: [1.0]})
    d = c1.as_dict()
    assert d["per_seed"]["1"]["n"] == 2 and d["n_items"] == 6
    assert c1.cell(2).startswith("+") or c1.cell(2).startswith("-")


def test_cells_show_the_interval_to_two_significant_digits() -> None:
    c = compare({0: [1.0, 1.004, 1.002]}, {0: [1.0, 1.0, 1.0]}, resamples=500)
    assert c.digits() == 1 - math.floor(math.log10(c.high - c.low))  # 4 for a width in [1e-3, 1e-2)
    assert c.cell(3) == f"{c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"
    wide = compare({0: [0.0, 1.0]}, {0: [0.0, 0.0]}, resamples=500)
    assert wide.digits() == 3
