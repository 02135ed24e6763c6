"""Experiment tracking: a tiny run with `logging: [tensorboard, mlflow, wandb]`, its logs read
back with each library's own reader; flattening and round metrics by hand; a missing package
is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedloom.cli import main
from fedloom.tracking import TrackingError, flatten, round_metrics
from fedloom.tracking.base import require_package
from tests.conftest import tiny_config


def test_flatten_and_round_metrics_by_hand() -> None:
    assert flatten({"a": {"b": 1, "c": [2, {"d": 3}]}, "e": [], "f": None}) == {
        "a.b": 1, "a.c.0": 2, "a.c.1.d": 3, "e": "[]", "f": None,
    }  # fmt: skip
    row = {
        "round": 2, "clients": [3, 5], "train_loss": 1.5, "eval_loss": None, "lr": 1e-4,
        "client_loss": {"3": 1.4, "5": 1.6}, "epsilon_max": 2.5, "packing": True,
        "aggregation": {"reducer": "mean", "update_norm": {"3": 0.1}}, "bytes_up": 10,
        "eval_loss_by_domain": {"math": float("nan")},
    }  # fmt: skip
    assert round_metrics(row) == {
        "train_loss": 1.5, "lr": 1e-4, "client_loss.3": 1.4, "client_loss.5": 1.6,
        "epsilon_max": 2.5, "aggregation.update_norm.3": 0.1, "bytes_up": 10.0,
    }  # fmt: skip


def test_missing_tracker_package_is_one_line() -> None:
    with pytest.raises(TrackingError, match=r"pip install 'fedloom\[tracking\]'"):
        require_package("mlflow", "no_such_module_for_fedloom")


def test_a_tiny_run_tracked_by_all_three(local_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    cfg = tiny_config(local_data, **{"federation.rounds": 2, "eval.every": 1})
    cfg.save(tmp_path / "c.yaml")
    out = tmp_path / "run"
    sets = ["--set", "logging=[tensorboard, mlflow, wandb]", "--set", "tracking.experiment=t"]
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out), *sets]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").open()]
    summary = json.loads((out / "summary.json").read_text())

    # TensorBoard: its own event reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    train = [(e.step, e.value) for e in ea.Scalars("train_loss")]
    assert train == [(r["round"], pytest.approx(r["train_loss"])) for r in rows]
    assert [e.value for e in ea.Scalars("eval_loss")] == pytest.approx(
        [r["eval_loss"] for r in rows]
    )
    assert ea.Scalars("summary/final_eval_loss.all")[0].value == pytest.approx(
        summary["final_eval_loss"]["all"]
    )
    assert "config" in str(ea.Tags()["tensors"]) or ea.Tags().get("tensors")

    # MLflow: its own client on the run folder's SQLite store
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("t")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == f"{tmp_path.name}/run" and run.info.status == "FINISHED"
    hist = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in hist] == [
        (r["round"], pytest.approx(r["train_loss"])) for r in rows
    ]
    assert run.data.params["federation.algorithm"] == "fedavg"
    assert run.data.params["lora.r"] == str(cfg.lora.r)
    assert run.data.metrics["summary.final_eval_loss.all"] == pytest.approx(
        summary["final_eval_loss"]["all"]
    )
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "adapter", "plots"} <= arts

    # W&B, offline: the run folder with its config and history, as `wandb sync` would upload it
    (wb,) = (out / "wandb").glob("offline-run-*")
    assert list(wb.glob("run-*.wandb"))
    ids = json.loads((out / "tracking.json").read_text())
    assert set(ids) == {"tensorboard", "mlflow", "wandb"} and ids["mlflow"] == run.info.run_id
    assert wb.name.endswith(ids["wandb"])
