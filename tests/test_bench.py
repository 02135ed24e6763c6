"""The bench: federations, the quantity split, `where` filters, dynamic local steps, the
collector and report (on hand-written cell folders), and the grid on a tiny random Llama."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedloom.bench.federations import FEDERATIONS, FederationError, get_federation
from fedloom.config import ConfigError, config_from_dict
from fedloom.data.filters import FilterError, apply_where, parse_condition
from fedloom.data.partition import _deal, lognormal_sizes, partition
from fedloom.data.schema import InstructionRecord
from fedloom.tasks import get_task
from fedloom.train import dynamic_steps

ROOT = Path(__file__).resolve().parents[1]


# -- the quantity split ----------------------------------------------------------------------


def test_deal_largest_remainder_by_hand() -> None:
    # shares 2.5 and 7.5 -> floors 2 and 7, the one left goes to the first of the tied remainders
    assert _deal(np.array([1.0, 3.0]), 10, 0).tolist() == [3, 7]
    # equal weights: 7 over 3 -> 2,2,2 + one to the first; plus the floor of 1 each
    assert _deal(np.ones(3), 7, 1).tolist() == [4, 3, 3]


def test_lognormal_sizes_hit_the_asked_spread() -> None:
    rng = np.random.default_rng(0)
    sizes = lognormal_sizes(3770, 145, 1.27, 3, rng)
    assert sum(sizes) == 3770 and len(sizes) == 145 and min(sizes) >= 3
    cv = statistics.stdev(sizes) / statistics.fmean(sizes)
    assert cv == pytest.approx(1.27, abs=0.01)
    assert lognormal_sizes(10, 3, 0.0, 1, rng) == [4, 3, 3]
    with pytest.raises(ValueError, match="needs 30 examples, there are 10"):
        lognormal_sizes(10, 3, 1.0, 10, rng)


def test_quantity_partition_covers_every_example_once_and_is_seeded() -> None:
    meta: list[dict[str, Any]] = [{} for _ in range(200)]
    a = partition("quantity", meta, 10, seed=1, size_cv=1.0, min_examples=2)
    b = partition("quantity", meta, 10, seed=1, size_cv=1.0, min_examples=2)
    c = partition("quantity", meta, 10, seed=2, size_cv=1.0, min_examples=2)
    assert a == b and a != c
    assert sorted(i for p in a for i in p) == list(range(200))
    sizes = [len(p) for p in a]
    assert statistics.stdev(sizes) / statistics.fmean(sizes) == pytest.approx(1.0, abs=0.02)


# -- where filters ---------------------------------------------------------------------------


def _rec(i: int, **meta: Any) -> InstructionRecord:
    return InstructionRecord(instruction=f"q{i}", response="a", metadata=dict(meta))


def test_where_lists_and_comparisons() -> None:
    assert parse_condition("language", ["en", "ko"])("ko")
    assert not parse_condition("language", ["en", "ko"])("fr")
    assert parse_condition("turns", [1])(1) and parse_condition("turns", [1])("1")
    ge2 = parse_condition("turns", ">=2")
    assert ge2(2) and ge2("3") and not ge2(1) and not ge2("many")
    assert parse_condition("x", "< 1.5")(1) and not parse_condition("x", "<1.5")(2)
    with pytest.raises(FilterError, match="neither a list of values nor a comparison"):
        parse_condition("turns", "about 2")
    with pytest.raises(FilterError, match="lists no accepted values"):
        parse_condition("turns", [])


def test_apply_where_counts_each_dropped_record_once() -> None:
    recs = [
        _rec(0, language="en", turns=1),
        _rec(1, language="ko", turns=1),
        _rec(2, language="en", turns=3),
        _rec(3, turns=1),  # no language: does not match
        _rec(4, language="fr", turns=5),  # fails both: counted under the first
    ]
    kept, dropped = apply_where(recs, {"language": ["en", "ko"], "turns": "<=1"})
    assert [r.instruction for r in kept] == ["q0", "q1"]
    assert dropped == {"where language ['en', 'ko']": 2, "where turns <=1": 1}


def test_a_bad_where_is_a_config_error_naming_the_source() -> None:
    raw = {"data": {"sources": [{"name": "sharegpt", "where": {"turns": "lots"}}]}}
    with pytest.raises(ConfigError, match="`where` of source 'sharegpt'"):
        config_from_dict(raw)


# -- dynamic local steps ---------------------------------------------------------------------


def test_dynamic_steps_by_hand() -> None:
    # 26 examples, 3 rounds x 5 of 145 clients: 15/145 visits; 26 / (15/145) = 251.3 examples
    # per visit, / batch 4 = 62.8 -> 63 steps
    assert dynamic_steps(26, 3, 5, 145, 4, 1, 1.0) == 63
    # every client every round (S = K): 40 examples x 2 epochs / 4 rounds / (2 x 2) = 5
    assert dynamic_steps(40, 4, 3, 3, 2, 2, 2.0) == 5
    assert dynamic_steps(1, 10, 1, 1, 8, 1, 0.1) == 1  # at least one step
    with pytest.raises(ValueError):
        dynamic_steps(0, 1, 1, 1, 1, 1, 1.0)


def test_local_steps_dynamic_in_the_config() -> None:
    cfg = config_from_dict({"train": {"local_steps": "dynamic", "epochs": 2}})
    assert cfg.train.local_steps == "dynamic" and cfg.train.epochs == 2.0
    assert config_from_dict({"train": {"local_steps": 3}}).train.fixed_steps == 3
    with pytest.raises(ConfigError, match="give a number >= 1 or `dynamic`"):
        config_from_dict({"train": {"local_steps": "fast"}})


# -- federations -----------------------------------------------------------------------------


def test_every_federation_documents_its_substitution() -> None:
    assert {"fed-chat", "fed-multilingual", "fed-preference", "fed-medmcqa-subject"} <= set(
        FEDERATIONS
    )
    for spec in FEDERATIONS.values():
        assert spec.substitute and spec.stands_for, spec.name
        config_from_dict(spec.sections())  # every federation is a valid run config
    with pytest.raises(FederationError, match="unknown federation 'fed-x'"):
        get_federation("fed-x")


def _client_sizes(name: str) -> list[int]:
    from fedloom.data.federated import assign_clients, split_records

    cfg = config_from_dict(get_federation(name).sections())
    split = split_records(cfg.data, 0, None, get_task(cfg.task).to_record)
    shards = assign_clients(split, cfg.data, cfg.partition, 0)
    return [len(s) for s in shards]


def test_fed_preference_has_the_published_shape() -> None:
    sizes = _client_sizes("fed-preference")
    assert len(sizes) == 21 and sum(sizes) == 240  # 300 pairs, 60 held out
    # Fed-ChatbotPA: 13 ± 21 per client (cv 1.6)
    assert statistics.fmean(sizes) == pytest.approx(11.43, abs=0.01)
    assert statistics.stdev(sizes) / statistics.fmean(sizes) == pytest.approx(1.6, abs=0.02)


def test_fed_multilingual_has_one_client_per_language() -> None:
    from fedloom.data.federated import split_records

    cfg = config_from_dict(get_federation("fed-multilingual").sections())
    split = split_records(cfg.data, 0, None, get_task(cfg.task).to_record)
    langs = {r.metadata["language"] for r in split.train}
    assert langs == {"en", "ko", "es", "zh", "pt", "fr", "de"}
    assert len(_client_sizes("fed-multilingual")) == 7


# -- the collector and the report ------------------------------------------------------------


def _metrics(
    loss: float, rouge: float, mmlu: float, half: float = 0.05, items: list[float] | None = None
) -> dict[str, Any]:
    held = {"mean": loss, "ci95_low": loss - half, "ci95_high": loss + half, "n": 3}
    return {
        "heldout_loss": held | ({"items": items} if items else {}),
        "rougeL": {"mean": rouge, "ci95_low": rouge - half, "ci95_high": rouge + half, "n": 4},
        "helpfulness": {"mean": None, "scored": 0, "answered": 4, "judge": None},
        "mmlu": {"accuracy": mmlu, "ci95_low": mmlu - 0.1, "ci95_high": mmlu + 0.1, "n": 20},
    }


def _write_cell(
    out: Path, name: str, method: str, metrics: dict[str, Any] | None, version: int = 4
) -> None:
    d = out / name
    (d / "run").mkdir(parents=True)
    kind = {"kind": "cell", "federation": "fed-a", "method": method, "seed": 0}
    (d / "config.yaml").write_text(yaml.safe_dump(kind))
    if metrics is not None:
        (d / "eval.json").write_text(json.dumps(metrics))
    (d / "run" / "summary.json").write_text(
        json.dumps({"schema_version": version, "num_clients": 3, "rounds_completed": 2})
    )
    rows = [{"round": r, "train_loss": 2.0 - r / 4, "eval_loss": 2.1 - r / 5} for r in (1, 2)]
    (d / "run" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "run" / "config.yaml").write_text(f"federation: {{algorithm: {method}}}\n")


@pytest.fixture()
def bench_out(tmp_path: Path) -> Path:
    out = tmp_path / "bench"
    base = out / "base.fed-a.s0"
    base.mkdir(parents=True)
    (base / "config.yaml").write_text(
        yaml.safe_dump({"kind": "base", "federation": "fed-a", "seed": 0})
    )
    (base / "eval.json").write_text(json.dumps(_metrics(2.5, 0.10, 0.25)))
    # per-item losses whose means are the cells' means (2.0, 1.8, 1.95)
    local, fedavg, fedprox = [2.0, 2.1, 1.9], [1.8, 1.85, 1.75], [1.9, 2.1, 1.85]
    _write_cell(out, "fed-a.local.s0", "local", _metrics(2.0, 0.20, 0.30, items=local))
    _write_cell(out, "fed-a.fedavg.s0", "fedavg", _metrics(1.8, 0.22, 0.30, items=fedavg))
    _write_cell(out, "fed-a.fedprox.s0", "fedprox", _metrics(1.95, 0.26, 0.35, items=fedprox))
    _write_cell(out, "fed-a.scaffold.s0", "scaffold", None)  # cut off before evaluation
    _write_cell(out, "fed-a.fedadam.s0", "fedadam", _metrics(1.0, 0.5, 0.5), version=2)
    return out


def test_collector_reads_cells_and_says_what_it_skipped(bench_out: Path) -> None:
    from fedloom.bench.report import collect, grid_table

    col = collect(bench_out)
    assert [c["method"] for c in col.cells] == ["fedavg", "fedprox", "local"]
    assert len(col.base) == 1
    assert any("fed-a.scaffold.s0: no eval.json" in s for s in col.skipped)
    assert any("fed-a.fedadam.s0: summary schema_version 2" in s for s in col.skipped)
    rows = {r["method"]: r for r in grid_table(col)}
    assert set(rows) == {"base", "local", "fedavg", "fedprox"}
    assert rows["fedavg"]["heldout_loss"] == pytest.approx([1.8, 1.75, 1.85])
    assert rows["fedprox"]["mmlu"] == pytest.approx([0.35, 0.25, 0.45])
    assert rows["local"]["helpfulness"] is None  # unscored: no judge


def test_verdicts_by_hand(bench_out: Path) -> None:
    from fedloom.bench.report import collect, grid_table, paired_difference, verdicts

    # differences [1, 2]: a bootstrap mean is 1, 1.5 or 2 -> [1, 2]
    assert paired_difference({0: [1.0, 3.0]}, {0: [0.0, 1.0]}) == pytest.approx([1.5, 1.0, 2.0])
    assert paired_difference({0: [1.0]}, {1: [1.0]}) is None  # no shared seed
    lines = verdicts(grid_table(collect(bench_out)))
    # loss (lower is better): fedavg 1.8 [1.75,1.85] and fedprox 1.95 [1.9,2.0] are both below
    # local 2.0 [1.95,2.05]; only fedavg's interval clears local's
    # paired per item: fedavg - local = [-0.2, -0.25, -0.15]: mean -0.2; a bootstrap mean of 3
    # draws is -0.25 or -0.15 at the extremes with chance 1/27 each (> 2.5%) -> [-0.25, -0.15];
    # fedprox - local = [-0.1, 0, -0.05]: mean -0.05 -> [-0.1, 0], touching 0: not significant
    assert (
        "fed-a · held-out loss: best fedavg 1.800; local 2.000; 2/2 federated methods ahead of "
        "local, 1 with non-overlapping 95% intervals (fedavg); paired per item vs local: fedavg "
        "-0.2000 [-0.2500, -0.1500], 1/2 significantly lower (fedavg)"
    ) in lines
    # ROUGE-L: fedprox 0.26 [0.21,0.31] vs local 0.2 [0.15,0.25]: ahead but overlapping
    assert any(
        line.startswith("fed-a · ROUGE-L: best fedprox 0.260; local 0.200; 2/2")
        and "0 with non-overlapping" in line
        for line in lines
    )
    # MMLU: fedavg ties local (not "ahead")
    assert any("MMLU accuracy: best fedprox 0.350; local 0.300; 1/2" in line for line in lines)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        self.tables += tag == "table"


def test_report_is_one_self_contained_html_file(bench_out: Path, tmp_path: Path) -> None:
    from fedloom.bench.report import write_report

    stage = tmp_path / "report-stage"
    stage.mkdir()
    res = write_report(bench_out, None, stage)
    assert res["cells"] == 3 and len(res["skipped"]) == 2
    page = (bench_out / "report.html").read_text()
    parser = _Images()
    parser.feed(page)
    assert parser.tables == 1
    assert len(parser.images) == 2 and all(
        s.startswith("data:image/png;base64,") for s in parser.images
    )
    assert "fed-a.fedadam.s0: summary schema_version 2" in page
    md = (bench_out / "report.md").read_text()
    assert "| fedavg | 1.800 [1.750, 1.850] |" in md
    assert "unscored in 3 cells" in md
    table = json.loads((stage / "table.json").read_text())
    assert {r["method"] for r in table} == {"base", "local", "fedavg", "fedprox"}


def test_report_renders_in_a_headless_browser(bench_out: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (apt-get install chromium) to render the report")
    from fedloom.bench.report import write_report

    write_report(bench_out, None, tmp_path)
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", f"--screenshot={shot}", "--window-size=1000,1400",
         (bench_out / "report.html").as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    # the page logs nothing to the console (chromium prints console messages as ":CONSOLE")
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []


# -- the grid --------------------------------------------------------------------------------


def test_bench_config_errors_name_the_field() -> None:
    from fedloom.bench.config import BenchConfig

    with pytest.raises(ConfigError, match="`bench.federations` has unknown \\['fed-x'\\]"):
        BenchConfig(federations=["fed-x"])
    with pytest.raises(ConfigError, match="`bench.methods` lists a method twice"):
        BenchConfig(methods=["fedavg", "fedavg"])
    with pytest.raises(ConfigError, match="`bench.sample_clients` names unknown \\['fed-y'\\]"):
        BenchConfig(sample_clients={"fed-y": 2})
    with pytest.raises(ConfigError, match="`bench.methods_for.fed-chat` is empty or has unknown"):
        BenchConfig(methods_for={"fed-chat": ["fedx"]})
    with pytest.raises(ConfigError, match="`bench.epochs` must be > 0"):
        BenchConfig(epochs={"fed-chat": 0.0})
    # a federation left out of a narrowed grid (--set bench.federations=[...]) may keep its
    # per-federation settings
    assert BenchConfig(federations=["fed-preference"], sample_clients={"fed-chat": 2})


def test_bench_grid_on_tiny_llama_runs_reports_and_resumes(tmp_path: Path) -> None:
    from fedloom.cli import main

    out = tmp_path / "tb"
    args = [
        "bench",
        str(ROOT / "configs/tiny-bench.yaml"),
        "--set",
        f"out={out}",
        "--set",
        "bench.federations=[fed-preference]",
        "--set",
        "bench.sample_clients={fed-preference: 3}",
        "--set",
        "bench.suites=[advbench]",
    ]
    assert main(args) == 0
    table = json.loads((out / "report" / "table.json").read_text())
    methods = {r["method"] for r in table}
    assert methods == {"base", "local", "local-best", "fedavg"}
    for r in table:
        assert r["rougeL"] is not None and r["dpo_loss"] is not None, r
    rows = {r["method"]: r for r in table}
    assert rows["base"]["dpo_loss"][0] == pytest.approx(math.log(2), abs=1e-5)  # its own reference
    assert rows["base"]["reward_accuracy"][0] == 0.5  # every tie counts half
    # local: the first round's 3 clients train alone at every round; each is scored, the cell
    # is their mean per item, and its best client is a row of its own
    rounds = [json.loads(x) for x in (out / "fed-preference.local.s0/run/metrics.jsonl").open()]
    assert len({tuple(r["clients"]) for r in rounds}) == 1 and len(rounds[0]["clients"]) == 3
    # each visit's steps give the client E passes over its shard over the run: the local
    # client visits every round (2), a federated one 2*3/21 times in expectation
    for method, visits in (("local", (1, 1)), ("fedavg", (3, 21))):
        run = out / f"fed-preference.{method}.s0/run"
        sizes = json.loads((run / "summary.json").read_text())["client_sizes"]
        for r in (json.loads(x) for x in (run / "metrics.jsonl").open()):
            for c, steps in r["client_steps"].items():
                assert steps == dynamic_steps(sizes[int(c)], 2, *visits, 2, 1, 0.05), method
    local = json.loads((out / "fed-preference.local.s0/eval.json").read_text())["dpo_loss"]
    per_client = local["clients"]
    assert len(per_client) == 3
    assert local["mean"] == pytest.approx(sum(per_client.values()) / 3, abs=1e-5)
    assert local["best_client"]["mean"] == min(per_client.values())
    assert rows["local-best"]["dpo_loss"][0] == pytest.approx(min(per_client.values()))
    assert (out / "report.html").exists()
    # the kit's paired rows: fedavg against local and local against base, per metric
    res = json.loads((out / "report" / "results.json").read_text())
    pairs = {(r["arm"], r["reference"]) for r in res["rows"]}
    assert {("fedavg", "local"), ("fedavg", "local-best"), ("local", "base")} <= pairs
    assert all(
        r["seeds"] == [0] and r["verdict"] in ("better", "worse", "unresolved") for r in res["rows"]
    )
    assert "Paired comparisons" in (out / "report.html").read_text()
    cells = [p for p in out.glob("*/done.json") if p.parent.name != "report"]
    done = sorted(p.stat().st_mtime for p in cells)
    assert main(args) == 0  # a rerun skips every finished stage (the report is redrawn)
    assert sorted(p.stat().st_mtime for p in cells) == done
    # a second seed added to the finished grid: only its cells run; the rows pool both seeds
    assert main([*args, "--set", "seeds=[0,1]"]) == 0
    assert sorted(p.stat().st_mtime for p in cells) == done
    assert (out / "fed-preference.fedavg.s1" / "items").is_dir()
    res = json.loads((out / "report" / "results.json").read_text())
    assert all(r["seeds"] == [0, 1] and set(r["per_seed"]) == {"0", "1"} for r in res["rows"])


def test_heldout_scores_the_first_n_records_that_fit() -> None:
    """`bench.heldout: n` scores n records: a record whose prompt leaves no room for a response
    at max_seq_len is passed over (and counted), not scored as one of the n."""
    from fedloom.bench.evaluate import scorable
    from fedloom.data.schema import InstructionRecord
    from fedloom.models.loader import load_tokenizer

    tok = load_tokenizer("tiny-llama")
    short = [InstructionRecord(f"Say {i}.", f"{i}") for i in range(4)]
    long = InstructionRecord("word " * 400, "x")
    recs = [short[0], long, short[1], long, short[2], short[3]]
    kept, skipped = scorable(tok, recs, 3, 64)
    assert kept == short[:3] and skipped == 2
    kept, skipped = scorable(tok, recs, 10, 64)
    assert kept == short and skipped == 2


def test_cost_table_by_hand() -> None:
    """Where the time went: minutes per cell, training tokens/s, evaluation seconds per scored
    model (a local cell scores each of its clients) and held-out items per second."""
    from fedloom.bench.collect import Collected, cost_table

    cell = {"stage_seconds": 300.0, "run_seconds": 120.0, "train_seconds": 100.0, "steps": 20,
            "tokens": 20_000, "items": 200, "models": 1}  # fmt: skip
    local = cell | {"tokens": None, "models": 3, "steps": 9}
    col = Collected(
        cells=[
            {"federation": "f", "method": "fedavg", "cost": cell},
            {"federation": "f", "method": "fedavg", "cost": cell | {"stage_seconds": 420.0}},
            {"federation": "f", "method": "local", "cost": local},
        ],
        base=[{"federation": "f", "cost": {"stage_seconds": 60.0, "items": 200, "models": 1}}],
    )
    rows = {r["method"]: r for r in cost_table(col)}
    fa = rows["fedavg"]
    assert fa["cells"] == 2 and fa["minutes"] == 6.0 and fa["train_tokens_per_s"] == 200.0
    assert fa["eval_seconds_per_model"] == 240.0  # (180 + 300) / 2
    assert fa["heldout_items_per_s"] == pytest.approx((200 / 180 + 200 / 300) / 2)
    assert rows["local"]["eval_seconds_per_model"] == 60.0  # 180 s over 3 clients
    assert rows["local"]["train_tokens_per_s"] is None  # not recorded: shown as —
    assert rows["base"]["eval_seconds_per_model"] == 60.0 and rows["base"]["steps"] is None
