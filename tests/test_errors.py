"""Bad input gets one clear line, never a traceback: for each kind of user error, the `fedloom`
command exits 2, stderr names the field, file or row and says what to do, and holds no
traceback. Every case fails before a model is loaded (seconds)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedloom.cli import main
from fedloom.config import load_config
from tests.conftest import tiny_config


def _raw(local_data: Path, **over: Any) -> dict[str, Any]:
    return tiny_config(local_data).to_dict() | over


def _write(tmp_path: Path, raw: Any, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    if argv[0] == "run" and "--out" not in argv and "--resume" not in argv:
        argv = [*argv, "--out", tempfile.mkdtemp(prefix="fedloom-errors-")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.startswith("fedloom: ") and err.count("\n") == 1, err  # one line
    for needle in needles:
        assert needle in err, err
    return err


def _with_source(local_data: Path, path: Path) -> dict[str, Any]:
    raw = _raw(local_data)
    raw["data"]["sources"][0]["path"] = str(path)
    return raw


def test_unknown_key(tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(local_data)
    raw["federation"]["roundz"] = 3
    _fails(capsys, ["run", str(_write(tmp_path, raw))], "unknown key `federation.roundz`", "rounds")


def test_misspelled_algorithm(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path, _raw(local_data))
    _fails(
        capsys,
        ["run", str(cfg), "--set", "federation.algorithm=fedavgg"],
        "`federation.algorithm` is 'fedavgg'",
        "fedavg",
    )


def test_negative_lr(tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path, _raw(local_data))
    _fails(capsys, ["run", str(cfg), "--set", "train.lr=-0.1"], "`train.lr` must be > 0")


def test_sample_clients_above_num_clients(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path, "federation: {sample_clients: 9}\npartition: {num_clients: 3}\n")
    _fails(
        capsys,
        ["run", str(cfg)],
        "`federation.sample_clients` (9) must be <= `partition.num_clients` (3)",
    )


def test_missing_files(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails(capsys, ["run", str(tmp_path / "nope.yaml")], "nope.yaml", "does not exist")
    cfg = _write(tmp_path, _with_source(local_data, tmp_path / "gone.jsonl"))
    _fails(capsys, ["run", str(cfg)], "`data.sources[].path`", "gone.jsonl", "does not exist")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_binary_garbage_file(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    data = tmp_path / f"garbage{suffix}"
    data.write_bytes(bytes(range(256)) * 8)
    cfg = _write(tmp_path, _with_source(local_data, data))
    _fails(capsys, ["run", str(cfg)], f"garbage{suffix}")


def test_empty_file(tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("\n\n")
    cfg = _write(tmp_path, _with_source(local_data, data))
    _fails(capsys, ["run", str(cfg)], "empty.jsonl is empty")


def test_bad_row_names_file_and_line(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text(local_data.read_text() + '{"q": "no answer column", "topic": "x"}\n')
    cfg = _write(tmp_path, _with_source(local_data, data))
    _fails(capsys, ["run", str(cfg)], "rows.jsonl: line 81", "no column 'a'", "skip_malformed")


def test_both_sigma_and_epsilon(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _raw(local_data)
    raw["privacy"]["client_dp"] = {"noise_multiplier": 1.0, "target_epsilon": 8.0}
    _fails(
        capsys,
        ["run", str(_write(tmp_path, raw))],
        "`privacy.client_dp`",
        "either `noise_multiplier` or `target_epsilon`, not both",
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- model\n- data\n", "top level must be a mapping"),
        ("federation: {rounds: 2\n", "not valid YAML at line"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_yaml_that_is_not_a_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    _fails(capsys, ["run", str(_write(tmp_path, text))], "run.yaml", needle)


def test_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["run", "--resume", str(tmp_path)], "no checkpoint.pt", str(tmp_path))


def test_unknown_suite(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails(capsys, ["eval", "--model", "tiny-llama", "--suite", "mmlux"], "mmlux", "mmlu")
    cfg = _write(tmp_path, _raw(local_data))
    _fails(capsys, ["run", str(cfg), "--set", "eval.suites=[mmlux]"], "`eval.suites`", "mmlux")


def test_registry_names_checked_at_load(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(_write(tmp_path, _raw(local_data)))
    _fails(capsys, ["run", cfg, "--set", "data.sources=[{name: dolly}]"], "'dolly'", "alpaca_en")
    _fails(capsys, ["run", cfg, "--set", "partition.strategy=zipf"], "`partition.strategy`", "iid")
    _fails(
        capsys,
        ["run", cfg, "--set", "federation.compression=gzip"],
        "`federation.compression`",
        "topk",
    )
    _fails(capsys, ["run", cfg, "--set", "federation.rounds=[1"], "--set federation.rounds")


def test_client_id_outside_partition(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The toy data's natural split has 2 clients (math, general): id 2 does not exist."""
    cfg = str(_write(tmp_path, _raw(local_data)))
    argv = ["client", cfg, "--server", "127.0.0.1:9092"]
    _fails(capsys, [*argv, "--client-id", "2"], "--client-id 2", "2 clients, ids 0 to 1")
    cfg4 = str(_write(tmp_path, "partition: {num_clients: 4}\n", "four.yaml"))
    _fails(capsys, ["client", cfg4, "--server", "x:1", "--client-id", "-1"], "ids 0 to 3")


def test_client_certificates_need_only_the_ca(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = str(_write(tmp_path, _raw(local_data)))
    argv = ["client", cfg, "--server", "127.0.0.1:9092", "--client-id", "0"]
    _fails(capsys, [*argv, "--certificates", str(tmp_path)], "missing ['ca.pem']", "copy")


def test_malformed_environment_knob(
    tmp_path: Path, local_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    cfg = str(_write(tmp_path, _raw(local_data)))
    monkeypatch.setenv("FEDLOOM_THREADS", "two")
    _fails(capsys, ["run", cfg, "--out", str(tmp_path / "o")], "FEDLOOM_THREADS='two'")
    monkeypatch.delenv("FEDLOOM_THREADS")
    monkeypatch.setenv("FEDLOOM_MALLOC", "trim")
    _fails(capsys, ["run", cfg, "--out", str(tmp_path / "o")], "FEDLOOM_MALLOC='trim'")
    monkeypatch.delenv("FEDLOOM_MALLOC")
    monkeypatch.setenv("FEDLOOM_RUN_HOOK", "no_such_module:turn")
    _fails(capsys, ["run", cfg], "FEDLOOM_RUN_HOOK='no_such_module:turn'", "cannot load")
    monkeypatch.setenv("FEDLOOM_RUN_HOOK", "turn")
    _fails(capsys, ["run", cfg], "write module:function")


def test_set_into_a_section_saved_as_null(local_data: Path, tmp_path: Path) -> None:
    """A resolved config saves `privacy.client_dp: null`; --set can fill it in."""
    saved = tmp_path / "resolved.yaml"
    tiny_config(local_data).save(saved)
    assert yaml.safe_load(saved.read_text())["privacy"]["client_dp"] is None
    cfg = load_config(saved, ["privacy.client_dp.target_epsilon=8"])
    assert cfg.privacy.client_dp is not None and cfg.privacy.client_dp.target_epsilon == 8.0
