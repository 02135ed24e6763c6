"""Checkpoint / resume: a run killed with SIGKILL after round 2 of 4 and resumed ends with the
same adapter as an uninterrupted run (strategy state, client states and sampling RNG restored)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedloom.cli import main
from tests.conftest import tiny_config

KILL_AFTER_ROUND_2 = """
import os, sys
from fedloom.config import load_config
from fedloom.engine import run
cfg = load_config(sys.argv[1])
run(cfg, sys.argv[2], on_round=lambda row: os.kill(os.getpid(), 9) if row["round"] == 2 else None)
"""


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


@pytest.mark.parametrize("algorithm", ["scaffold", "fedadam"])
def test_sigkill_then_resume_equals_uninterrupted(
    local_data: Path, tmp_path: Path, algorithm: str
) -> None:
    cfg = tiny_config(
        local_data,
        **{
            "federation.algorithm": algorithm,
            "federation.rounds": 4,
            "federation.sample_clients": 1,  # 1 of 2 per round: the sampling RNG matters
            "train.local_steps": 2,
            "eval.every": 2,
        },
    )
    cfg_path = tmp_path / "cfg.yaml"
    cfg.save(cfg_path)
    assert main(["run", str(cfg_path), "--out", str(tmp_path / "straight")]) == 0

    killed = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_ROUND_2, str(cfg_path), str(killed)],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert len((killed / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (killed / "adapter").exists()
    assert main(["run", "--resume", str(killed)]) == 0

    a, b = _adapter(tmp_path / "straight"), _adapter(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    straight = [
        json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert [r["clients"] for r in rows] == [r["clients"] for r in straight]
    assert [r["eval_loss"] for r in rows if "eval_loss" in r] == [
        r["eval_loss"] for r in straight if "eval_loss" in r
    ]


def test_resume_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err
    assert main(["run", "configs/tiny.yaml", "--resume", str(tmp_path)]) == 2
    assert main(["run"]) == 2


class _Evil:
    """Unpickling this would run code: ``weights_only=True`` must refuse it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_checkpoint_with_pickled_object_is_refused(
    local_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run folder whose checkpoint.pt (or a client-state file) holds a pickled object is
    refused on --resume with one clear line, and the object's code never runs."""
    cfg = tiny_config(
        local_data, **{"federation.algorithm": "scaffold", "federation.rounds": 2, "eval.every": 0}
    )
    cfg_path = tmp_path / "cfg.yaml"
    cfg.save(cfg_path)
    run_dir = tmp_path / "run"
    assert main(["run", str(cfg_path), "--out", str(run_dir)]) == 0
    capsys.readouterr()
    # the saved checkpoint loads with weights_only=True (tensors and plain values only)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert set(state["strategy"]) == {"global_adapter", "control"}
    client_files = sorted((run_dir / "client_states").glob("*.pt"))
    assert client_files, "scaffold keeps c_i per client"
    torch.load(client_files[0], weights_only=True)

    state["history"][0]["evil"] = _Evil()
    torch.save(state, run_dir / "checkpoint.pt")
    assert main(["run", "--resume", str(run_dir)]) == 2
    captured = capsys.readouterr()
    assert "refusing to load this checkpoint" in captured.err
    assert "Traceback" not in captured.err and "pwned" not in captured.out


@pytest.mark.parametrize("algorithm", ["scaffold", "fedadam"])
def test_continue_from_equals_one_run(local_data: Path, tmp_path: Path, algorithm: str) -> None:
    """A 4-round schedule run as two phases of 2 (`federation.continue_from`, `round_offset`,
    `schedule_rounds`: FedGC's two-phase strategies) on the same data ends with the same
    adapter as one run: server state, SCAFFOLD's client controls, the sampling RNG, the
    per-round example draws and the cosine learning rate all carry over."""
    common = {
        "federation.algorithm": algorithm,
        "federation.sample_clients": 1,  # 1 of 2 per round: the sampling RNG matters
        "train.local_steps": 2,
        "eval.every": 0,
    }
    one = tmp_path / "one"
    tiny_config(local_data, **common, **{"federation.rounds": 4}).save(tmp_path / "one.yaml")
    assert main(["run", str(tmp_path / "one.yaml"), "--out", str(one)]) == 0
    phase1 = tmp_path / "p1"
    tiny_config(
        local_data, **common, **{"federation.rounds": 2, "federation.schedule_rounds": 4}
    ).save(tmp_path / "p1.yaml")
    assert main(["run", str(tmp_path / "p1.yaml"), "--out", str(phase1)]) == 0
    phase2 = tmp_path / "p2"
    tiny_config(
        local_data,
        **common,
        **{
            "federation.rounds": 2,
            "federation.round_offset": 2,
            "federation.schedule_rounds": 4,
            "federation.continue_from": str(phase1),
        },
    ).save(tmp_path / "p2.yaml")
    assert main(["run", str(tmp_path / "p2.yaml"), "--out", str(phase2)]) == 0
    a, b = _adapter(one), _adapter(phase2)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for p in (phase1, phase2) for x in (p / "metrics.jsonl").open()]
    straight = [json.loads(x) for x in (one / "metrics.jsonl").open()]
    assert [r["lr"] for r in rows] == [r["lr"] for r in straight]
    assert [r["clients"] for r in rows] == [r["clients"] for r in straight]
    # without the carried state the second phase differs (the test can fail)
    fresh = tmp_path / "fresh"
    tiny_config(
        local_data,
        **common,
        **{
            "federation.rounds": 2,
            "federation.round_offset": 2,
            "federation.schedule_rounds": 4,
            "lora.init_from": str(phase1 / "adapter"),
        },
    ).save(tmp_path / "fresh.yaml")
    assert main(["run", str(tmp_path / "fresh.yaml"), "--out", str(fresh)]) == 0
    c = _adapter(fresh)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_continue_from_errors(tmp_path: Path) -> None:
    from fedloom.config import config_from_dict
    from fedloom.settings import ConfigError

    with pytest.raises(ConfigError, match="holds no checkpoint.pt"):
        config_from_dict({"federation": {"continue_from": str(tmp_path)}})
    with pytest.raises(ConfigError, match="must cover round_offset"):
        config_from_dict({"federation": {"rounds": 3, "round_offset": 2, "schedule_rounds": 4}})
