"""The `openai` backend and a pipeline's generate stage against a real OpenAI-compatible server:
`transformers serve` from the project's own environment, on loopback, serving the tiny model.
Success; the server killed mid-job (the job stops after a few failures in a row, naming the
endpoint, instead of waiting through every prompt's retries); restarted (the rerun generates only
what is missing: nothing lost, nothing duplicated); a pipeline stage with failed prompts is not
done, and its rerun retries them."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedloom.cli import main
from fedloom.generation import (
    GenerationConfig,
    GenerationStopped,
    GeneratorConfig,
    OpenAIGenerator,
    read_job,
    run_complete,
    run_job,
)
from fedloom.judges import JudgeConfig, JudgeModel, JudgeUnavailable, run_judge
from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`transformers serve MODEL` on a loopback port; start/stop at will."""

    def __init__(self, model: str, port: int) -> None:
        self.model, self.port, self.proc = model, port, None
        self.url = f"http://127.0.0.1:{port}/v1"

    def start(self) -> None:
        exe = Path(sys.executable).with_name("transformers")
        cmd = [str(exe), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen([*cmd, "--device", "cpu"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail("transformers serve did not come up in 120 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    if not Path(sys.executable).with_name("transformers").exists() and not shutil.which(
        "transformers"
    ):
        pytest.skip("no `transformers` command in this environment")
    from fedloom.models.loader import hf_folder

    s = Server(str(hf_folder("tiny-llama")), _free_port())
    s.start()
    yield s
    s.stop()


def _gen(server: Server) -> OpenAIGenerator:
    return OpenAIGenerator(server.model, server.url, retries=0, backoff=0.01, timeout=20)


def test_killed_server_stops_the_job_and_the_rerun_completes_it(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "gen.jsonl"
    items = [(f"p{i}", f"Say the number {i}.") for i in range(10)]
    cfg = GenerationConfig(max_new_tokens=4, batch_size=1, max_consecutive_failures=3)
    first = run_complete(_gen(server), items[:4], cfg, path, progress=False)
    assert (first.generated, first.failed) == (4, 0)
    server.stop()
    with pytest.raises(GenerationStopped) as stopped:
        run_job(_gen(server), items, cfg, path, progress=False)
    msg = str(stopped.value)
    assert "3 prompts in a row failed" in msg and server.url in msg and "\n" not in msg
    job = read_job(path, [i for i, _ in items])
    assert len(job.ok) == 4 and len(job.failed) == 3  # stopped early: 3 error rows, not 6
    assert all(server.url in e for e in job.failed.values())  # the endpoint is named
    server.start()
    again = run_complete(_gen(server), items, cfg, path, progress=False)
    assert (again.done_before, again.generated, again.failed) == (4, 6, 0)
    job = read_job(path, [i for i, _ in items])
    assert [r["id"] for r in job.ok] == [i for i, _ in items] and not job.failed
    ok_rows = [json.loads(x) for x in path.read_text().splitlines() if '"generations"' in x]
    assert len(ok_rows) == 10  # nothing generated twice


def test_a_stage_with_failed_prompts_is_not_done_and_its_rerun_retries_them(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "u2s"
    gen = f"u2s.generator={{backend: openai, model: {server.model}, base_url: {server.url}, retries: 0}}"
    args = ["pipeline", str(ROOT / "configs/tiny-u2s.yaml"), "--out", str(out), "--set", gen]
    args += ["--set", "u2s.generator.timeout=20", "--set", "u2s.generation.max_new_tokens=8"]
    args += ["--set", "u2s.generation.max_consecutive_failures=2"]
    server.stop()
    try:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "generation stopped" in err and server.url in err
        assert not (out / "generate.s0" / "done.json").exists()  # not done: rerun retries
    finally:
        server.start()
    main(args)  # the random model's outputs do not parse: the run stops after the generate stage
    gen_done = json.loads((out / "generate.s0" / "done.json").read_text())["summary"]
    assert gen_done["failed"] == 0 and gen_done["generated"] == 8
    job = read_job(out / "generate.s0" / "generations.jsonl")
    assert len(job.ok) == 8 and not job.failed


def test_n_samples_are_asked_again_from_a_server_that_ignores_n(
    server: Server, tmp_path: Path
) -> None:
    # transformers serve answers n=2 with one choice: the backend asks again, next seed
    cfg = GenerationConfig(max_new_tokens=4, temperature=0.9, n=3, seed=5, batch_size=2)
    report = run_complete(_gen(server), [("a", "Hi."), ("b", "Yo.")], cfg, tmp_path / "n.jsonl")
    assert report.generated == 2
    rows = read_job(tmp_path / "n.jsonl").ok
    assert all(len(r["generations"]) == 3 for r in rows)
    assert rows[0]["endpoint"] == server.url  # provenance: where, and with which settings
    assert rows[0]["sampling"] | {"top_p": None} == {
        "temperature": 0.9, "top_p": None, "top_k": 0, "repetition_penalty": 1.0, "n": 3,
        "seed": 5, "max_new_tokens": 4, "chat": True,
    }  # fmt: skip


def _judge(server: Server, model: str | None = None, url: str | None = None) -> JudgeModel:
    gen = GeneratorConfig(backend="openai", model=model or server.model,
                          base_url=url or server.url, retries=1, timeout=20)  # fmt: skip
    return JudgeModel(JudgeConfig(generator=gen))


def test_judges_against_a_real_server(server: Server, tmp_path: Path) -> None:
    judge = _judge(server)
    judge.preflight()
    items = [(f"q{i}", {"question": f"What is {i}+1?", "answer": str(i + 1)}) for i in range(3)]
    for kind in ("single", "reference", "pairwise", "safety", "quality"):
        asked = {
            "single": items,
            "reference": [(i, it | {"reference": it["answer"]}) for i, it in items],
            "pairwise": [(i, {"question": it["question"], "answer_a": "1", "answer_b": "2"})
                         for i, it in items],
            "safety": [(i, {"request": it["question"], "response": it["answer"]}) for i, it in items],
            "quality": [(i, {"instruction": it["question"], "response": it["answer"]}) for i, it in items],
        }[kind]  # fmt: skip
        judged = run_judge(kind, judge, asked, tmp_path / f"{kind}.jsonl", progress=False)
        # the random tiny model writes no verdicts: unjudged, counted, never scored 0
        assert len(judged.values) + len(judged.unjudged) == 3
        assert all(v != 0.0 for v in judged.values.values()) or kind in ("pairwise", "safety")
        assert "of replies parsed" in judged.line()
        calls = 6 if kind == "pairwise" else 3
        rows = read_job(tmp_path / f"{kind}.jsonl").ok
        assert len(rows) == calls and rows[0]["endpoint"] == server.url


def test_judge_preflight_names_the_endpoint(server: Server) -> None:
    with pytest.raises(JudgeUnavailable) as wrong:
        _judge(server, model="no-such-model").preflight()
    assert server.url in str(wrong.value) and "400" in str(wrong.value)
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(JudgeUnavailable) as down:
        _judge(server, url=dead).preflight()
    assert dead in str(down.value) and "Connection" in str(down.value)


def test_judge_preflight_on_a_server_answering_501() -> None:
    """A real server cannot be made to answer 501: a stub does."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.send_response(501)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    stub = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{stub.server_port}/v1"
    try:
        gen = GeneratorConfig(backend="openai", model="m", base_url=url, retries=1)
        with pytest.raises(JudgeUnavailable, match=r"501"):
            JudgeModel(JudgeConfig(generator=gen)).preflight()
    finally:
        stub.shutdown()


def test_a_pipeline_checks_its_judge_before_any_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A configured judge that cannot answer stops the pipeline before its first stage (not
    after hours of data, training and answers), in one line naming the endpoint."""
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    judge = (
        f"safety.judge={{generator: {{backend: openai, model: m, base_url: {dead}, retries: 0}}}}"
    )
    code = main(["pipeline", str(ROOT / "configs/tiny-safety.yaml"), "--out", str(tmp_path),
                 "--set", judge, "--set", "safety.question_generator.model=tiny-llama"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and dead in err and "preflight" in err
    assert not any(p.is_dir() for p in tmp_path.iterdir())  # no stage started
