"""fedloom.generation on tiny-llama: greedy output equals a bare `model.generate`, seeded samples
are reproducible, stop strings cut, adapter switching changes the output and switches back, a
generation job resumes without redoing finished prompts and records a failing batch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from fedloom.config import ConfigError, LoraSettings, ModelConfig
from fedloom.data.schema import InstructionRecord
from fedloom.data.template import prompt_text
from fedloom.generation import (
    Generation,
    GenerationConfig,
    LocalGenerator,
    Prompt,
    cut_at_stop,
    finished_ids,
    run_job,
)
from fedloom.models import attach_lora, get_adapter_state, load_model

PROMPTS = ["Name a colour.", "What is 2 plus 2? Explain at length please.", "Hi"]


@pytest.fixture(scope="module")
def gen() -> LocalGenerator:
    loaded = load_model(ModelConfig(precision="fp32"))
    model = attach_lora(loaded.model, LoraSettings(r=4, alpha=8, dropout=0.0), seed=0)
    return LocalGenerator(model, loaded.tokenizer, loaded.device, name="tiny")


@pytest.mark.parametrize("chat", [True, False])
def test_greedy_equals_bare_generate(gen: LocalGenerator, chat: bool) -> None:
    """Batched (sorted, left-padded) greedy generation equals one-at-a-time `model.generate`.
    (tiny-llama's chat answers are mostly special tokens, decoded to little; its raw
    continuations are text, checked non-empty.)"""
    cfg = GenerationConfig(max_new_tokens=12, batch_size=2, chat=chat)
    gens = gen.generate(PROMPTS, cfg)
    tok = gen.tokenizer
    want = []
    for p in PROMPTS:  # one at a time, no padding: the reference
        text = prompt_text(tok, InstructionRecord(instruction=p, response="")) if chat else p
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = gen.model.generate(**enc, max_new_tokens=12, do_sample=False)  # type: ignore[operator]
        want.append(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    assert [g[0].text for g in gens] == [w.strip() for w in want]
    assert all(g[0].tokens == 12 or g[0].finish_reason == "stop" for g in gens)
    if not chat:
        assert all(g[0].text for g in gens)


def test_seeded_samples_are_reproducible(gen: LocalGenerator) -> None:
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0, n=2, seed=3, chat=False)
    a = gen.generate(PROMPTS, cfg)
    b = gen.generate(PROMPTS, cfg)
    assert [[g.text for g in x] for x in a] == [[g.text for g in x] for x in b]
    assert all(len(x) == 2 for x in a)
    assert any(x[0].text != x[1].text for x in a)  # two samples, not one repeated
    c = gen.generate(
        PROMPTS, GenerationConfig(max_new_tokens=10, temperature=1.0, n=2, seed=4, chat=False)
    )
    assert [[g.text for g in x] for x in c] != [[g.text for g in x] for x in a]


def test_stop_strings_cut_the_text(gen: LocalGenerator) -> None:
    raw = GenerationConfig(max_new_tokens=16, chat=False)
    outs = [g[0].text for g in gen.generate(PROMPTS, raw)]
    prompt, full = max(zip(PROMPTS, outs, strict=True), key=lambda po: len(po[1]))
    assert len(full) > 4
    stop = full[2:4]
    cut = gen.generate([prompt], GenerationConfig(max_new_tokens=16, chat=False, stop=[stop]))[0][0]
    assert cut.text == full[: full.index(stop)].strip() and cut.finish_reason == "stop"
    assert cut_at_stop("abc###def", ["###", "c"]) == ("ab", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


def test_adapter_switching(gen: LocalGenerator) -> None:
    cfg = GenerationConfig(max_new_tokens=10, chat=False)
    before = gen.generate(PROMPTS, cfg)
    loaded = get_adapter_state(gen.model)  # type: ignore[arg-type]
    other = {
        k: v + 0.5 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
        for k, v in loaded.items()
    }
    with gen.adapter(other):
        changed = gen.generate(PROMPTS, cfg)
    with gen.adapter(None):  # the base model
        base = gen.generate(PROMPTS, cfg)
    after = gen.generate(PROMPTS, cfg)
    assert [g[0].text for g in changed] != [g[0].text for g in before]
    assert [g[0].text for g in after] == [g[0].text for g in before]
    for k, v in get_adapter_state(gen.model).items():  # type: ignore[arg-type]
        assert torch.equal(v, loaded[k])
    # a fresh adapter has B = 0: the base model answers the same
    assert [g[0].text for g in base] == [g[0].text for g in before]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="need `temperature` > 0"):
        GenerationConfig(n=2)
    with pytest.raises(ConfigError, match="top_p"):
        GenerationConfig(top_p=0)
    with pytest.raises(ConfigError, match="`generation.max_consecutive_failures` must be >= 0"):
        GenerationConfig(max_consecutive_failures=-1)


class Scripted:
    """A generator whose answers are the prompts reversed; batches holding `boom` raise."""

    name = "scripted"
    endpoint = None

    def __init__(self) -> None:
        self.seen: list[str] = []

    def generate(self, prompts: Sequence[Prompt], cfg: GenerationConfig) -> list[list[Generation]]:
        texts = [str(p) for p in prompts]
        self.seen += texts
        if "boom" in texts:
            raise RuntimeError("backend down")
        return [[Generation(t[::-1], len(t), "stop")] for t in texts]


def test_job_resumes_and_records_failures(tmp_path: Path) -> None:
    path = tmp_path / "gen.jsonl"
    items = [(f"p{i}", f"prompt {i}") for i in range(5)]
    cfg = GenerationConfig(batch_size=2)
    first = Scripted()
    report = run_job(first, items[:3], cfg, path, progress=False)
    assert (report.generated, report.failed, report.done_before) == (3, 0, 0)
    # a kill mid-write leaves half a line: that prompt is redone, the others are not
    with path.open("a") as f:
        f.write('{"id": "p3", "prompt": "prompt 3", "gener')
    second = Scripted()
    report = run_job(second, [*items, ("p5", "boom")], cfg, path, progress=False)
    assert second.seen == ["prompt 3", "prompt 4", "boom"]
    assert (report.done_before, report.generated, report.failed) == (3, 2, 1)
    rows = [
        json.loads(x)
        for x in path.read_text().splitlines()
        if x.startswith('{"id"') and x.endswith("}")
    ]
    by_id = {r["id"]: r for r in rows}
    assert by_id["p4"]["generations"][0]["text"] == "4 tpmorp"
    assert "backend down" in by_id["p5"]["error"]
    assert finished_ids(path) == {f"p{i}" for i in range(5)}  # p5 failed: retried next time
    third = Scripted()
    run_job(third, [*items, ("p5", "fine now")], cfg, path, progress=False)
    assert third.seen == ["fine now"]


# --- the OpenAI-compatible backend against a fake server on loopback -------------------------


class _FakeOpenAI:
    """A loopback server answering /v1/chat/completions and /v1/completions like vLLM: it
    records every request body, fails the first ``flaky`` requests with a 503, and always
    fails prompts containing FAIL with a 500."""

    def __init__(self, flaky: int = 0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.flaky = flaky
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.requests.append({"path": self.path, **body})
                    fail = outer.flaky > 0
                    outer.flaky -= int(fail)
                text = json.dumps(body.get("messages") or body.get("prompt"))
                if fail or "FAIL" in text:
                    self.send_response(503 if fail else 500)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "boom"}}')
                    return
                n = body.get("n", 1)
                prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
                if "messages" in body:
                    choices = [
                        {"index": i, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"echo {i}: {prompt} END tail"}}
                        for i in range(n)
                    ]  # fmt: skip
                    obj = "chat.completion"
                else:
                    choices = [
                        {"index": i, "finish_reason": "length", "text": f" more {i}"}
                        for i in range(n)
                    ]
                    obj = "text_completion"
                resp = {
                    "id": "x", "object": obj, "created": 0, "model": body["model"],
                    "choices": choices,
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4 * n, "total_tokens": 3 + 4 * n},
                }  # fmt: skip
                data = json.dumps(resp).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_openai_backend_request_shape_retries_and_failures(tmp_path: Path) -> None:
    from fedloom.generation import OpenAIGenerator

    server = _FakeOpenAI(flaky=2)
    try:
        gen = OpenAIGenerator(
            "served-model", server.url, "k", concurrency=2, retries=2, backoff=0.01
        )
        cfg = GenerationConfig(
            max_new_tokens=7, temperature=0.5, top_p=0.9, top_k=5, n=2, seed=3, stop=["END"]
        )
        out = gen.generate(["hello", "world"], cfg)
        # two 503s were retried: both prompts answered, n samples each, cut at the stop string
        assert [[g.text for g in gens] for gens in out] == [
            ["echo 0: hello", "echo 1: hello"],
            ["echo 0: world", "echo 1: world"],
        ]
        assert all(g.tokens == 4 and g.finish_reason == "stop" for gens in out for g in gens)
        assert all(g.prompt_tokens == 3 for gens in out for g in gens)  # from `usage`
        ok = [r for r in server.requests if r["path"].endswith("/chat/completions")]
        assert len(ok) == 4  # 2 failed + 2 answered
        req = ok[-1]
        assert req["model"] == "served-model" and req["max_tokens"] == 7 and req["n"] == 2
        assert req["temperature"] == 0.5 and req["top_p"] == 0.9 and req["seed"] == 3
        assert req["stop"] == ["END"] and req["top_k"] == 5  # top_k travels as an extra field
        assert req["messages"] == [{"role": "user", "content": req["messages"][0]["content"]}]

        raw = gen.generate(["once upon"], GenerationConfig(chat=False, max_new_tokens=2))
        assert raw[0][0].text == "more 0" and raw[0][0].finish_reason == "length"
        assert server.requests[-1]["path"].endswith("/completions")
        assert "messages" not in server.requests[-1]

        # a request that keeps failing is recorded in the job, not fatal; rerun retries it
        path = tmp_path / "gen.jsonl"
        rep = run_job(gen, [("a", "fine"), ("b", "FAIL please")], GenerationConfig(), path, False)
        assert (rep.generated, rep.failed) == (1, 1)
        rows = [json.loads(ln) for ln in path.read_text().splitlines()]
        failed = next(r for r in rows if r["id"] == "b")
        assert "3 attempts" in failed["error"] and "InternalServerError" in failed["error"]
        assert finished_ids(path) == {"a"}
    finally:
        server.close()


def test_prompt_tokens_count_the_templated_prompt(gen: LocalGenerator, tmp_path: Path) -> None:
    """Prefill work is reported: each generation's prompt_tokens is its templated prompt's
    length (padding excluded); a job sums it once per prompt."""
    cfg = GenerationConfig(max_new_tokens=3, batch_size=3)
    outs = gen.generate(PROMPTS, cfg)
    for p, gens in zip(PROMPTS, outs, strict=True):
        ids = gen.tokenizer(gen.render(p, True), add_special_tokens=False)["input_ids"]
        assert gens[0].prompt_tokens == len(ids)
    items = [(str(i), p) for i, p in enumerate(PROMPTS)]
    rep = run_job(gen, items, cfg, tmp_path / "j.jsonl", progress=False)
    assert rep.prompt_tokens == sum(g[0].prompt_tokens for g in outs)


def test_read_job_counts_each_prompt_once(tmp_path: Path) -> None:
    """A retried prompt's old error row is not a failure once it succeeded; a prompt that
    failed twice is one failure; rows of other prompts and a cut line are counted apart."""
    from fedloom.generation import read_job

    def ok(i: str, text: str) -> dict:
        return {"id": i, "prompt": "p", "generations": [{"text": text, "tokens": 1}]}

    rows = [
        {"id": "a", "prompt": "p", "error": "timeout"},
        ok("b", "bee"),
        {"id": "c", "prompt": "p", "error": "first"},
        ok("a", "ay"),  # the retry of a succeeded
        {"id": "c", "prompt": "p", "error": "second"},
        ok("old", "from an earlier job"),
    ]
    path = tmp_path / "gen.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"id": "d", "gener')
    job = read_job(path, ["a", "b", "c", "d"])
    assert [r["id"] for r in job.ok] == ["a", "b"]  # first-appearance order
    assert job.texts() == {"a": "ay", "b": "bee"}
    assert job.failed == {"c": "second"}
    assert (job.foreign, job.cut) == (1, 1)
    assert job.summary() == {"ok": 2, "failed": 1, "foreign": 1}
    assert read_job(path).foreign == 0 and len(read_job(path).ok) == 3
    assert read_job(tmp_path / "missing.jsonl").ok == []


def test_generator_with_an_adapter_from_the_factory(tmp_path: Path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    from fedloom.config import ConfigError
    from fedloom.generation import GeneratorConfig, GeneratorError, build_generator
    from fedloom.models import load_model
    from fedloom.settings import ModelConfig

    loaded = load_model(ModelConfig(name="tiny-llama", precision="fp32"))
    lora = LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    get_peft_model(loaded.model, lora).save_pretrained(str(tmp_path / "writer"))
    gen = build_generator(
        GeneratorConfig(model="tiny-llama", weights="fp32", adapter=str(tmp_path / "writer"))
    )
    assert gen.name == "tiny-llama+writer" and isinstance(gen.model, PeftModel)  # type: ignore[attr-defined]
    with pytest.raises(GeneratorError, match="holds no adapter_config.json"):
        build_generator(GeneratorConfig(model="tiny-llama", adapter=str(tmp_path / "none")))
    with pytest.raises(ConfigError, match="serve the merged model"):
        GeneratorConfig(backend="openai", base_url="http://127.0.0.1:1/v1", adapter="x")
    with pytest.raises(ConfigError, match="`generator.backend` is 'vllm'"):
        GeneratorConfig(backend="vllm")


@pytest.mark.parametrize("sampling", [False, True])
def test_shared_prefix_is_prefilled_once_with_the_same_tokens(
    gen: LocalGenerator, sampling: bool
) -> None:
    """A batch's shared prompt prefix is prefilled once and its KV cache copied to every
    sequence; the generations equal those with every prompt prefilled whole (greedy, and seeded
    sampling with n = 2), and the tokens not prefilled again are counted."""
    shared = "Task: read the passage and continue it in the same style. " * 4
    prompts = [shared + p for p in ("The river", "A long time ago in a land far away", "Yes")]
    cfg = GenerationConfig(
        max_new_tokens=8,
        batch_size=3,
        chat=False,
        temperature=1.0 if sampling else 0.0,
        n=2 if sampling else 1,
        seed=5,
    )
    gen.reuse_prefix = False
    try:
        whole = gen.generate(prompts, cfg)
        assert gen.prefix_tokens_reused == 0
    finally:
        gen.reuse_prefix = True
    reused = gen.generate(prompts, cfg)
    n_shared = len(gen.tokenizer(shared, add_special_tokens=False)["input_ids"])
    # at least the shared text's tokens (less one at the boundary), for all but one sequence
    assert gen.prefix_tokens_reused >= (n_shared - 1) * (3 * cfg.n - 1)
    as_tuples = lambda gs: [[(g.text, g.tokens, g.finish_reason) for g in row] for row in gs]  # noqa: E731
    assert as_tuples(reused) == as_tuples(whole)
    assert all(g.text for row in reused for g in row)
    assert [row[0].prompt_tokens for row in reused] == [row[0].prompt_tokens for row in whole]
