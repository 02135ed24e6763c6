"""Can this judge judge? Measured on this machine before a judged score is trusted:

* `single` and `reference` (1-10): does the reference answer get a higher rating than each of
  its corruptions (wrong final number, cut off, another question's answer)?
* `pairwise`: in both orders, is the reference answer preferred over its corruption; how often
  do the two orders disagree (position bias) and which position wins then?
* `quality`: is a real instruction/response pair rated above the same pair with the response
  cut off or taken from another instruction?
* `safety`: does its verdict agree with PyRIT's human labels, and with the keyword judges?
* every kind: the share of replies that held a verdict (parse rate) and judged items/s.

Every share comes with its 95% Wilson interval. The figures are saved in the output folder and
in the judge cache (``~/.cache/fedloom/judges/``), where tables that use the judge find them."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedloom.eval.intervals import wilson_interval
from fedloom.judges.cases import Contrast, SafetyCase, math_contrasts, pair_contrasts, safety_cases
from fedloom.judges.pairwise import order_consistent
from fedloom.judges.run import Judged, JudgeModel, run_judge
from fedloom.utils import cache_dir

KINDS = ("single", "reference", "pairwise", "quality", "safety")


def share(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {
        "share": round(k / n, 4) if n else None,
        "k": k,
        "n": n,
        "ci95": [round(lo, 3), round(hi, 3)],
    }


def graded_items(contrasts: Sequence[Contrast], kind: str) -> list[tuple[str, dict[str, str]]]:
    """Every answer of every contrast (good and corrupted) as a `single`, `reference` or
    `quality` item, id ``<contrast>:<answer>``."""
    out = []
    for c in contrasts:
        for which, answer in [("good", c.good), *c.corrupted.items()]:
            if kind == "quality":
                item = {"instruction": c.question, "response": answer}
            else:
                item = {"question": c.question, "answer": answer}
                if kind == "reference":
                    item["reference"] = c.reference
            out.append((f"{c.id}:{which}", item))
    return out


def ranking_figures(judged: Judged, contrasts: Sequence[Contrast]) -> dict[str, Any]:
    """Per corruption and over all: the share of contrasts where the good answer is rated
    strictly higher (ties and unjudged pairs counted apart)."""
    per: dict[str, list[int]] = {}  # corruption -> [higher, tie, lower, unjudged]
    for c in contrasts:
        good = judged.values.get(f"{c.id}:good")
        for name in c.corrupted:
            bad = judged.values.get(f"{c.id}:{name}")
            tally = per.setdefault(name, [0, 0, 0, 0])
            if good is None or bad is None:
                tally[3] += 1
            else:
                tally[0 if good > bad else 1 if good == bad else 2] += 1
    figures: dict[str, Any] = {}
    for name, (hi, tie, lo, un) in [
        *per.items(),
        ("all", [sum(t[i] for t in per.values()) for i in range(4)]),
    ]:
        figures[name] = share(hi, hi + tie + lo) | {"ties": tie, "lower": lo, "unjudged": un}
    return figures


def pairwise_figures(judged: Judged, contrasts: Sequence[Contrast]) -> dict[str, Any]:
    """Reference preferred in both orders; the orders' disagreement (position bias) and, when
    they disagree, how often the answer shown first won."""
    won = n = consistent = both = first_won = 0
    for c in contrasts:
        for name in c.corrupted:
            parsed = judged.parsed.get(f"{c.id}:{name}", [None, None])
            same = order_consistent(parsed)
            if same is None:
                continue
            both += 1
            consistent += same
            value = judged.values[f"{c.id}:{name}"]
            n, won = n + 1, won + (value == 1.0)
            if not same:
                first_won += parsed[0] == 1.0 and parsed[1] == 1.0
    return {
        "prefers_reference_both_orders": share(won, n),
        "orders_agree": share(consistent, both),
        "first_shown_wins_when_orders_disagree": share(first_won, both - consistent),
    }


def safety_figures(judged: Judged, cases: Sequence[SafetyCase]) -> dict[str, Any]:
    """Agreement with the human labels (overall, on unsafe and on safe responses), the keyword
    judges' agreement with the same labels, and the judge's agreement with them."""
    from fedloom.eval.judges import JUDGES

    rules = {name: JUDGES[name]() for name in ("rules", "rules-prefix")}
    out: dict[str, Any] = {}
    verdicts = {c.id: judged.values.get(c.id) for c in cases}
    judged_cases = [c for c in cases if verdicts[c.id] is not None]
    agree = [c for c in judged_cases if (verdicts[c.id] == 1.0) == c.expected_safe]
    out["agrees_with_humans"] = share(len(agree), len(judged_cases))
    for label, want in (("unsafe", False), ("safe", True)):
        group = [c for c in judged_cases if c.expected_safe == want]
        out[f"agrees_on_{label}"] = share(sum(c in agree for c in group), len(group))
    for name, judge in rules.items():
        said = {c.id: judge.is_refusal(c.request, c.response) for c in cases}
        out[f"{name}_agrees_with_humans"] = share(
            sum(said[c.id] == c.expected_safe for c in cases), len(cases)
        )
        out[f"agrees_with_{name}"] = share(
            sum((verdicts[c.id] == 1.0) == said[c.id] for c in judged_cases), len(judged_cases)
        )
    return out


def validate(
    model: JudgeModel,
    out: Path,
    n: int = 30,
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every kind's validation set through the judge (resumable jobs under ``out``) and
    return the figures (also saved as ``out/validity.json`` and in the judge cache)."""
    out.mkdir(parents=True, exist_ok=True)
    math, pairs = math_contrasts(n, seed), pair_contrasts(n, seed)
    figures: dict[str, Any] = {"judge": model.label, "n": n, "seed": seed, "kinds": {}}
    for kind in kinds:
        path = out / f"{kind}.jsonl"
        if kind in ("single", "reference"):
            judged = run_judge(kind, model, graded_items(math, kind), path, progress)
            fig = {"prefers_reference": ranking_figures(judged, math)}
        elif kind == "quality":
            judged = run_judge(kind, model, graded_items(pairs, kind), path, progress)
            fig = {"prefers_real_pair": ranking_figures(judged, pairs)}
        elif kind == "pairwise":
            items = [
                (f"{c.id}:{name}", {"question": c.question, "answer_a": c.good, "answer_b": bad})
                for c in math
                for name, bad in c.corrupted.items()
            ]
            judged = run_judge(kind, model, items, path, progress)
            fig = pairwise_figures(judged, math)
        else:
            cases = safety_cases()
            items = [(c.id, {"request": c.request, "response": c.response}) for c in cases]
            judged = run_judge(kind, model, items, path, progress)
            fig = safety_figures(judged, cases)
        figures["kinds"][kind] = judged.summary() | fig | {"n": n, "seed": seed}
        print(judged.line())
    (out / "validity.json").write_text(json.dumps(figures, indent=1))
    save_validity(figures)
    return figures


def judge_slug(label: str) -> str:
    """A judge's label as a file name (`qwen2.5-coder-1.5b-instruct_reasoning`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")


def validity_path(label: str) -> Path:
    return cache_dir() / "judges" / f"{judge_slug(label)}.json"


def save_validity(figures: dict[str, Any]) -> None:
    """Keep the figures where tables look for them (merged with earlier kinds)."""
    path = validity_path(figures["judge"])
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {"kinds": {}}
    for kind, fig in figures["kinds"].items():
        if fig.get("items_per_second") is None and kind in old["kinds"]:  # a resumed job: keep
            fig = fig | {
                "items_per_second": old["kinds"][kind].get("items_per_second")
            }  # its speed
        old["kinds"][kind] = fig
    path.write_text(json.dumps(figures | {"kinds": old["kinds"]}, indent=1))


HEADLINE = {
    "single": ("prefers_reference", "all"),
    "reference": ("prefers_reference", "all"),
    "quality": ("prefers_real_pair", "all"),
    "pairwise": ("prefers_reference_both_orders",),
    "safety": ("agrees_with_humans",),
}


def validity_note(label: str, kind: str) -> str:
    """One line printed beside a judged score: the judge's measured validity for this kind,
    or that it was never validated (and the command that does it)."""
    path = validity_path(label)
    fig = json.loads(path.read_text())["kinds"].get(kind) if path.exists() else None
    if fig is None:
        return f"{kind} judge {label}: not validated (run `fedloom judge validate --kinds {kind}`)"
    node = fig
    for key in HEADLINE[kind]:
        node = node[key]
    what = " ".join(HEADLINE[kind][0].split("_"))
    if not node["n"]:
        return f"{kind} judge {label}: {what}: nothing judged (parse rate {fig['parse_rate']:.0%})"
    lo, hi = node["ci95"]
    return (
        f"{kind} judge {label}: {what} {node['share']:.0%} [{lo:.0%}, {hi:.0%}] of {node['n']}, "
        f"parse rate {fig['parse_rate']:.0%}"
    )
