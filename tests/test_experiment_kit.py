"""The experiment kit end to end: the worked example of docs/extending.md (a whole pipeline in
about 100 lines) on the tiny model with two seeds, the base scored once, the report rendered."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from fedloom.pipeline import PIPELINES, load_pipeline_config, run_pipeline
from tests.conftest import ROOT


def _example() -> None:
    if "more-data" in PIPELINES:
        return
    spec = importlib.util.spec_from_file_location("more_data", ROOT / "docs/examples/more_data.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["more_data"] = mod
    spec.loader.exec_module(mod)


@pytest.fixture(scope="module")
def kit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    _example()
    from fedloom.eval import heldout

    tmp = tmp_path_factory.mktemp("kit")
    rows = [
        {"instruction": f"What is {i} plus {i}?", "response": f"It is {2 * i}."} for i in range(30)
    ]
    (tmp / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "method": "more-data",
        "out": str(tmp / "out"),
        "seeds": [0, 1],
        "more-data": {"path": str(tmp / "d.jsonl"), "clients": 2, "small": 3, "heldout": 6},
        "train": {
            "model": {"name": "tiny-llama", "precision": "fp32"},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "data": {"max_seq_len": 64},
            "federation": {"rounds": 1, "sample_clients": 2},
            "train": {"local_steps": 2, "batch_size": 2},
            "eval": {"every": 0, "batch_size": 4},
        },
    }
    (tmp / "c.yaml").write_text(yaml.safe_dump(cfg))
    calls = 0
    real = heldout.example_losses

    def counting(*a, **k):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(*a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(heldout, "example_losses", counting)
    try:
        run_pipeline(load_pipeline_config(tmp / "c.yaml"), Console(quiet=True))
    finally:
        mp.undo()
    return tmp / "out", calls


def test_the_example_pipeline_pools_two_seeds(kit_run: tuple[Path, int]) -> None:
    out, calls = kit_run
    # per seed: the base once (cached for the second arm), each arm's adapter once
    assert calls == 2 * 3
    res = json.loads((out / "table" / "results.json").read_text())
    pairs = [(r["arm"], r["reference"]) for r in res["rows"]]
    assert pairs == [("full", "small"), ("small", "base"), ("full", "base")]
    for r in res["rows"]:
        assert r["seeds"] == [0, 1] and r["n_items"] == 12 and r["unpaired"] == 0
        assert r["low"] <= r["diff"] <= r["high"]
    md = (out / "table" / "table.md").read_text()
    assert "| full | small | held-out loss (lower is better) |" in md
    assert [c["stage"] for c in res["costs"]][:2] == ["small.train.s0", "full.train.s0"]
    # the same seed's two arms are scored on the same held-out items
    a = json.loads((out / "small.train.s0/items/heldout.tuned.json").read_text())["values"]
    b = json.loads((out / "full.train.s0/items/heldout.tuned.json").read_text())["values"]
    assert set(a) == set(b) and len(a) == 6


def test_the_report_renders_in_chromium(kit_run: tuple[Path, int], tmp_path: Path) -> None:
    out, _ = kit_run
    page = out / "table" / "report.html"
    assert page.read_text().count("data:image/png;base64,") >= 1  # self-contained
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (apt-get install chromium) to render the report")
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--disable-background-networking", f"--screenshot={shot}",
         "--window-size=1000,1200", page.as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 20_000
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []


def test_leak_guards_hold_under_python_O() -> None:
    """`python -O` strips asserts; the guards raise, so a leak still stops the run."""
    code = (
        "from fedloom.experiment.guards import LeakError, require_disjoint, require_none\n"
        "hits = 0\n"
        "for f in (lambda: require_disjoint(['q1', 'q2'], ['q2'], 'held-out in training'),\n"
        "          lambda: require_none(['private text'], 'prompts')):\n"
        "    try:\n"
        "        f()\n"
        "    except LeakError:\n"
        "        hits += 1\n"
        "print(hits, __debug__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2 False"  # every guard raised, with asserts off
