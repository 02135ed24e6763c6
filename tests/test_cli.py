from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fedloom.cli import main
from tests.conftest import tiny_config


def write_config(tmp_path: Path, local_data: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config(local_data).to_dict()))
    return path


def test_run_writes_all_outputs(
    local_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = write_config(tmp_path, local_data)
    out = tmp_path / "out"
    assert (
        main(
            [
                "run",
                str(cfg_path),
                "--out",
                str(out),
                "--set",
                "federation.rounds=1",
                "--set",
                "federation.algorithm=fedyogi",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "held-out loss" in printed and "general" in printed and "math" in printed
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["federation"]["rounds"] == 1 and saved["federation"]["algorithm"] == "fedyogi"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["algorithm"] == "fedyogi"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["base_eval_loss"]) == {"all", "general", "math"}
    assert (out / "adapter" / "adapter_config.json").exists() and (
        out / "plots" / "loss.png"
    ).exists()


def test_config_error_exits_2_with_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text("federation: {sample_clients: 9}\npartition: {num_clients: 3}\n")
    assert main(["run", str(cfg_path)]) == 2
    assert (
        "`federation.sample_clients` (9) must be <= `partition.num_clients` (3)"
        in capsys.readouterr().err
    )


def test_listing_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["algorithms"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("fedavg", "scaffold", "fedyogi", "central", "local"))
    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(
        n in listed for n in ("gsm8k", "sharegpt", "multiple_choice", "17,392", "Apache-2.0")
    )


def test_data_show_and_split(
    local_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "show", "alpaca_en", "-n", "1"]) == 0
    shown = capsys.readouterr().out
    assert "alpaca_en (instruction): alpaca_en: kept 999" in shown
    assert '"domain": "general"' in shown
    assert main(["data", "show", "dpo_en", "-n", "1"]) == 0
    assert '"rejected":' in capsys.readouterr().out
    assert main(["data", "show", "dolly"]) == 2
    cfg_path = write_config(tmp_path, local_data)
    png = tmp_path / "split.png"
    split = ["data", "split", str(cfg_path), "--out", str(png), "--set", "partition.strategy=iid"]
    split += ["--set", "partition.num_clients=3"]
    assert main(split) == 0
    out = capsys.readouterr().out
    assert "clients (3)" in out and png.stat().st_size > 0
    # same split twice: deterministic
    assert main(split) == 0
    assert capsys.readouterr().out == out


def test_eval_heldout_needs_config(
    local_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--model", "tiny-llama", "--suite", "heldout"]) == 2
    assert "needs --config" in capsys.readouterr().err
    cfg_path = write_config(tmp_path, local_data)
    out = tmp_path / "h.json"
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny-llama",
                "--precision",
                "fp32",
                "--suite",
                "heldout",
                "--config",
                str(cfg_path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())["suites"]["heldout"]
    assert set(report["loss"]) == {"all", "general", "math"} and report["perplexity"]["all"] > 1


def test_bad_inputs_are_one_line_and_leave_no_folder(
    local_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a data file that breaks after the config was accepted: no half-made run folder is left
    bad = tmp_path / "bad.jsonl"
    good = local_data.read_text().splitlines()
    bad.write_text("\n".join([*good[:30], "{not json", *good[30:]]) + "\n")
    cfg_path = write_config(tmp_path, bad)
    out = tmp_path / "never"
    assert main(["run", str(cfg_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bad.jsonl" in err
    assert not out.exists()
    # an adapter folder that does not exist: one line, before any model is loaded
    missing = tmp_path / "no-such-adapter"
    assert main(["eval", "--adapter", str(missing), "--suite", "mmlu", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "--adapter" in err and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_pipeline_and_bench_take_out(tmp_path: Path) -> None:
    from fedloom.cli import make_parser
    from fedloom.commands.common import with_out as _with_out

    args = make_parser().parse_args(["pipeline", "c.yaml", "--out", "x", "--set", "seeds=[1]"])
    assert _with_out(args) == ["seeds=[1]", "out=x"]
    args = make_parser().parse_args(["bench", "c.yaml", "--out", str(tmp_path)])
    assert _with_out(args) == [f"out={tmp_path}"]
