"""Engine smoke tests for every algorithm, and the equivalences that pin the semantics down."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from fedloom.algorithms import ALGORITHMS
from fedloom.config import RunConfig
from fedloom.engine import Federation, run
from fedloom.models import attach_lora, get_adapter_state, load_model
from fedloom.train import draw_examples
from fedloom.utils import rng_for, state_nbytes
from tests.conftest import tiny_config


def _base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_two_rounds(algorithm: str, local_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(local_data, **{"federation.algorithm": algorithm})
    fed = Federation.build(cfg)
    base_before, init = _base_weights(fed.model), get_adapter_state(fed.model)
    summary = run(cfg, tmp_path, federation=fed)

    # base weights bit-identical, every LoRA tensor changed
    for n, p in _base_weights(fed.model).items():
        assert torch.equal(p, base_before[n]), f"base weight {n} changed"
    targets = fed.strategy.eval_targets()
    trained = (
        next(a for a in targets.values() if a is not fed.strategy.global_adapter)
        if algorithm == "local"
        else targets["global"]
    )
    for k, v in trained.items():
        assert not torch.equal(v, init[k]), f"{algorithm}: adapter tensor {k} did not change"

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    for r in rows:
        assert r["algorithm"] == algorithm
        # one adapter per sampled client each way; SCAFFOLD's controls travel with it (x2)
        per_client = state_nbytes(init) * (2 if algorithm == "scaffold" else 1)
        assert r["bytes_up"] == r["bytes_down"] == per_client * len(r["clients"])
        assert {"clients", "train_loss", "eval_loss", "seconds"} <= r.keys()
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 0
    assert summary["final_eval_loss"]["all"] > 0
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "summary.json").exists()

    # the saved adapter reloads with plain PEFT and reproduces the trained tensors
    adapter_dir = (
        tmp_path / "adapter" if algorithm != "local" else next((tmp_path / "adapters").iterdir())
    )
    base = load_model(cfg.model).model
    reloaded = PeftModel.from_pretrained(base, adapter_dir)
    saved = get_adapter_state(reloaded)
    expected = targets["global"] if algorithm != "local" else targets[adapter_dir.name]
    for k, v in expected.items():
        torch.testing.assert_close(saved[k], v)


def _final_adapter(cfg: RunConfig, out: Path) -> dict[str, torch.Tensor]:
    fed = Federation.build(cfg)
    run(cfg, out, federation=fed)
    return fed.strategy.global_adapter


def test_fedprox_mu_zero_equals_fedavg(local_data: Path, tmp_path: Path) -> None:
    a = _final_adapter(tiny_config(local_data), tmp_path)
    b = _final_adapter(
        tiny_config(
            local_data, **{"federation.algorithm": "fedprox", "federation.params": {"mu": 0.0}}
        ),
        tmp_path,
    )
    for k in a:
        assert torch.equal(a[k], b[k])
    c = _final_adapter(
        tiny_config(
            local_data, **{"federation.algorithm": "fedprox", "federation.params": {"mu": 10.0}}
        ),
        tmp_path,
    )
    assert any(not torch.equal(a[k], c[k]) for k in a), "mu > 0 must change the result"


def test_scaffold_zero_controls_one_step_equals_fedavg(local_data: Path, tmp_path: Path) -> None:
    over = {"federation.rounds": 1, "train.local_steps": 1}
    a = _final_adapter(tiny_config(local_data, **over), tmp_path)
    b = _final_adapter(
        tiny_config(local_data, **over, **{"federation.algorithm": "scaffold"}), tmp_path
    )
    for k in a:
        assert torch.equal(a[k], b[k])


def test_one_client_one_round_equals_local_training(local_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        local_data,
        **{
            "federation.rounds": 1,
            "federation.sample_clients": 1,
            "partition.strategy": "iid",
            "partition.num_clients": 1,
        },
    )
    fed_adapter = _final_adapter(cfg, tmp_path)

    # the same training by hand: same model/adapter init, same examples, lr and dropout seed
    fed = Federation.build(cfg)
    n = cfg.train.local_steps * cfg.train.batch_size
    picked = draw_examples(fed.data.clients[0], n, rng_for(cfg.seed, "examples", 0, 0))
    seed = rng_for(cfg.seed, "dropout", 0, 0).getrandbits(63)
    fed.trainer.train([fed.data.train[i] for i in picked], cfg.train.lr, seed=seed)
    local = get_adapter_state(fed.model)
    for k in local:
        assert torch.equal(local[k], fed_adapter[k])


def test_same_seed_same_adapter(local_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(local_data, **{"lora.dropout": 0.1})
    a, b = _final_adapter(cfg, tmp_path), _final_adapter(cfg, tmp_path)
    for k in a:
        assert torch.equal(a[k], b[k])


def test_lora_init_is_seeded() -> None:
    from fedloom.config import LoraSettings, ModelConfig

    adapters = [
        get_adapter_state(attach_lora(load_model(ModelConfig()).model, LoraSettings(r=2), seed=s))
        for s in (1, 1, 2)
    ]
    k = next(k for k in adapters[0] if "lora_A" in k)
    assert torch.equal(adapters[0][k], adapters[1][k]) and not torch.equal(
        adapters[0][k], adapters[2][k]
    )


def test_shipped_tiny_config_runs(tmp_path: Path) -> None:
    """configs/tiny.yaml as shipped: real Alpaca + GSM8K from their PyPI packages, tiny-llama."""
    from fedloom.config import load_config
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    summary = run(cfg, tmp_path)
    assert set(summary["base_eval_loss"]) == {"all", "general", "math"}
    assert summary["rounds"] == 2 and len(summary["client_sizes"]) == 4
    assert summary["final_eval_loss"]["all"] < summary["base_eval_loss"]["all"]


def test_gradient_checkpointing_gives_the_same_update(local_data: Path, tmp_path: Path) -> None:
    over = {"federation.rounds": 1}
    a = _final_adapter(tiny_config(local_data, **over), tmp_path / "a")
    b = _final_adapter(
        tiny_config(local_data, **over, **{"model.gradient_checkpointing": True}), tmp_path / "b"
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_benchmark_suites_before_and_after(local_data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        local_data,
        **{
            "federation.rounds": 3,
            "eval.every": 1,
            "eval.suites": ["mmlu", "advbench"],
            "eval.suite_limit": 3,
            "eval.max_new_tokens": 4,
        },
    )
    summary = run(cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # suites every `eval.every` rounds on the global adapter; the last round's are the final ones
    assert [set(r.get("benchmarks", {})) for r in rows] == [{"mmlu", "advbench"}] * 2 + [set()]
    assert 0 <= rows[0]["benchmarks"]["mmlu"]["accuracy"] <= 1
    for name, key in (("mmlu", "accuracy"), ("advbench", "safety_rate")):
        b = summary["benchmarks"][name]
        assert b["n"] == 3 and len(b["items"]) == 3
        assert 0 <= b["base"][key] <= 1 and 0 <= b["final"][key] <= 1
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert set(saved["benchmarks"]) == {"mmlu", "advbench"}


TURN_LOCK: dict[str, str] = {}
"""The lock file the hook below takes (set by the test)."""


@contextlib.contextmanager
def locked_turn() -> Iterator[None]:
    """A run hook (fedloom.engine.hooks): each part of the run waits for TURN_LOCK's flock."""
    from fedloom.utils import machine_lock

    with machine_lock(TURN_LOCK["path"]):
        yield


def test_a_run_hook_waits_its_turn_and_trains_the_same(
    local_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn hook installed through FEDLOOM_RUN_HOOK (as the engine-overhead benchmark
    installs its machine turn lock): each part of a run that uses the machine waits for it
    (here a lock held by another holder for the first second), a round's time leaves the wait
    out, and the run trains exactly as without it."""
    import threading
    import time

    from fedloom.engine.hooks import HOOK_ENV
    from fedloom.utils import machine_lock

    cfg = tiny_config(local_data)
    plain = _final_adapter(cfg, tmp_path / "plain")
    lock = str(tmp_path / "turn.lock")
    monkeypatch.setitem(TURN_LOCK, "path", lock)
    monkeypatch.setenv(HOOK_ENV, "tests.test_engine:locked_turn")
    held, release = threading.Event(), threading.Event()

    def other_run() -> None:
        with machine_lock(lock):
            held.set()
            release.wait(10)

    other = threading.Thread(target=other_run)
    other.start()
    held.wait(10)
    threading.Timer(1.0, release.set).start()
    t0 = time.perf_counter()
    turns = _final_adapter(cfg, tmp_path / "turns")
    elapsed = time.perf_counter() - t0
    other.join(10)
    assert elapsed >= 1.0  # it waited for the other holder
    rows = [json.loads(x) for x in (tmp_path / "turns" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["seconds"] for r in rows) < elapsed - 0.9  # the wait is not in a round's time
    for k in plain:
        assert torch.equal(plain[k], turns[k])


def test_run_hook_is_called_around_each_part(local_data: Path, tmp_path: Path) -> None:
    """run(turn=...) wraps the build, the baseline, each round and the final evaluation."""
    calls: list[str] = []

    @contextlib.contextmanager
    def counting() -> Iterator[None]:
        calls.append("in")
        yield
        calls.append("out")

    run(tiny_config(local_data, **{"federation.rounds": 3}), tmp_path, turn=counting)
    assert calls == ["in", "out"] * (1 + 1 + 3 + 1)


@pytest.mark.parametrize(
    ("task", "algorithm"), [("sft", "fedavg"), ("sft", "local"), ("dpo", "scaffold")]
)
def test_outputs_have_one_stable_shape(
    local_data: Path, pair_data: Path, tmp_path: Path, task: str, algorithm: str
) -> None:
    """Every metrics.jsonl row and summary.json carry the same keys (docs/outputs.md) and the
    schema version, whatever the task and algorithm; what does not apply is null or empty."""
    from fedloom.engine.outputs import ROUND_FIELDS, SCHEMA_VERSION, SUMMARY_FIELDS, task_keys
    from tests.conftest import dpo_config

    over = {"federation.algorithm": algorithm, "eval.every": 2, "federation.rounds": 2}
    cfg = dpo_config(pair_data, **over) if task == "dpo" else tiny_config(local_data, **over)
    summary = run(cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    row_keys, summary_keys = task_keys()
    assert row_keys == ["eval_classify", "eval_loss_by_domain", "eval_preference"]
    for row in rows:
        assert set(row) == set(ROUND_FIELDS) | set(row_keys)
        assert row["schema_version"] == SCHEMA_VERSION and row["task"] == task
    assert set(summary) == set(SUMMARY_FIELDS) | set(summary_keys)
    assert summary["schema_version"] == SCHEMA_VERSION
    assert rows[0]["eval_loss"] is None and rows[1]["eval_loss"] is not None  # every 2 rounds
    assert rows[0]["failed_clients"] == {} and rows[0]["epsilon_by_client"] == {}
    assert summary["privacy"] is None
    if task == "dpo":
        assert rows[1]["eval_loss_by_domain"] is None
        assert rows[1]["eval_preference"]["all"] == rows[1]["eval_loss"]
        assert set(summary["final_preference"]) >= {"accuracy", "reward_accuracy", "margin"}
    else:
        assert rows[1]["eval_preference"] is None and summary["final_preference"] is None
        assert rows[1]["eval_classify"] is None and summary["final_classify"] is None
        assert rows[1]["eval_loss_by_domain"]["all"] == rows[1]["eval_loss"]
    assert (summary["final_eval_loss_by_client"] is not None) == (algorithm == "local")
