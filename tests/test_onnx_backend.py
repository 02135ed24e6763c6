"""The onnx backend (ONNX Runtime GenAI) against the local backend on tiny-llama: the same greedy
text from an fp32 conversion, batched prompts of different lengths, seeded sampling, and one
clear line for what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedloom.config import ConfigError
from fedloom.errors import FedloomError
from fedloom.generation import GenerationConfig, GeneratorConfig, build_generator
from fedloom.generation.onnx_backend import OnnxGenerator, _import_og, build_onnx

pytest.importorskip("onnxruntime_genai")

PROMPTS = [
    "Write a poem about the sea and the sky in spring.",
    "Hi",
    "What is two plus two?",
    "The cat sat on",
    "List three prime numbers greater than ten, then explain why each is prime.",
]


@pytest.fixture(scope="module")
def pair() -> tuple[OnnxGenerator, object]:
    onnx = build_generator(
        GeneratorConfig(backend="onnx", model="tiny-llama", onnx_precision="fp32"), chat=False
    )
    local = build_generator(GeneratorConfig(model="tiny-llama", weights="fp32"), chat=False)
    assert isinstance(onnx, OnnxGenerator)
    return onnx, local


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_fp32_conversion_generates_what_the_local_backend_does(pair, batch: int) -> None:  # type: ignore[no-untyped-def]
    onnx, local = pair
    cfg = GenerationConfig(max_new_tokens=10, batch_size=batch, chat=False)
    got, want = onnx.generate(PROMPTS, cfg), local.generate(PROMPTS, cfg)  # type: ignore[attr-defined]
    assert [g[0].text for g in got] == [g[0].text for g in want]
    assert [g[0].prompt_tokens for g in got] == [g[0].prompt_tokens for g in want]
    assert all(g[0].tokens == 10 and g[0].finish_reason == "length" for g in got)


def test_seeded_sampling_is_reproducible_and_gives_n_samples(pair) -> None:  # type: ignore[no-untyped-def]
    onnx, _ = pair
    cfg = GenerationConfig(max_new_tokens=8, temperature=1.0, n=3, seed=5, batch_size=2, chat=False)
    a, b = onnx.generate(PROMPTS, cfg), onnx.generate(PROMPTS, cfg)
    assert a == b and all(len(g) == 3 for g in a)
    assert len({g.text for gens in a for g in gens}) > len(PROMPTS)  # samples differ
    other = onnx.generate(PROMPTS, GenerationConfig(**{**cfg.__dict__, "seed": 6}))
    assert other != a


def test_stop_strings_cut(pair) -> None:  # type: ignore[no-untyped-def]
    onnx, _ = pair
    full = onnx.generate(["The cat sat on"], GenerationConfig(max_new_tokens=10, chat=False))
    text = full[0][0].text
    cut = text[3:6]
    got = onnx.generate(
        ["The cat sat on"], GenerationConfig(max_new_tokens=10, chat=False, stop=[cut])
    )[0][0]
    assert got.text == text[: text.find(cut)].strip() and got.finish_reason == "stop"


def test_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="onnx_precision"):
        GeneratorConfig(backend="onnx", onnx_precision="fp8")
    with pytest.raises(FedloomError, match="no config.json"):
        build_onnx(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FedloomError, match="builder failed.*log"):
        build_onnx(tmp_path, "fp32", dest=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)
    with pytest.raises(FedloomError, match=r"pip install 'fedloom\[onnx\]'"):
        _import_og()
