"""Portable adapters: a run's adapter names its published base (not a local folder), carries a
model card, and loads with plain transformers + PEFT — the snippet in docs/outputs.md, run in a
process that never imports fedloom — giving fedloom's own logits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from fedloom.models.card import base_provenance, make_portable, model_card
from fedloom.models.registry import get_model_spec
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]

PLAIN = """
import sys, torch
BASE, ADAPTER, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
{snippet}
assert not any(m == "fedloom" or m.startswith("fedloom.") for m in sys.modules)
ids = tok("Hello, how are you?", return_tensors="pt").input_ids
with torch.no_grad():
    torch.save(model(input_ids=ids).logits, OUT)
"""


def _snippet() -> str:
    doc = (ROOT / "docs/outputs.md").read_text()
    part = doc.split("## Loading an adapter without fedloom", 1)[1]
    return re.search(r"```python\n(.*?)```", part, re.S).group(1)  # type: ignore[union-attr]


def test_run_adapter_is_portable_and_loads_with_plain_peft(
    local_data: Path, tmp_path: Path
) -> None:
    from fedloom.cli import main
    from fedloom.models import load_model
    from fedloom.models.loader import hf_folder, load_tokenizer

    cfg = tiny_config(local_data, **{"federation.rounds": 1})
    cfg.save(tmp_path / "c.yaml")
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out)]) == 0
    adapter = out / "adapter"
    acfg = json.loads((adapter / "adapter_config.json").read_text())
    assert acfg["base_model_name_or_path"] == "tiny-llama"  # no published id: the registry name
    card = (adapter / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "tiny-llama" and meta["library_name"] == "peft"
    assert "fedavg" in card and "Held-out loss" in card and "**fedloom** 0.1.0" in card
    assert f"fedloom run {tmp_path / 'c.yaml'} --out {out}" in card  # the command, as typed
    assert f"reproduce with: fedloom run {out / 'config.yaml'}" in card
    assert json.loads((out / "base_model.json").read_text())["name"] == "tiny-llama"

    # the documented snippet, in a process without fedloom, on the same base
    base = hf_folder("tiny-llama", cfg.model.seed)
    script = PLAIN.format(snippet=_snippet())
    logits = tmp_path / "plain.pt"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(base), str(adapter), str(logits)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    from peft import PeftModel

    loaded = load_model(cfg.model)
    model = PeftModel.from_pretrained(loaded.model, str(adapter)).eval()
    ids = load_tokenizer("tiny-llama")("Hello, how are you?", return_tensors="pt").input_ids
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    torch.testing.assert_close(torch.load(logits), ours, atol=1e-5, rtol=1e-5)


def test_published_ids_resolve_and_cards_name_them(tmp_path: Path) -> None:
    spec = get_model_spec("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert spec is not None and spec.name == "smollm2-135m-instruct"
    assert get_model_spec("qwen/qwen2.5-coder-1.5b-instruct").name == "qwen2.5-coder-1.5b-instruct"  # type: ignore[union-attr]
    prov = base_provenance("smollm2-135m-instruct")
    assert prov["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    local = prov["local_base"]
    assert local["quantization"] == "Q4_1" and len(local["gguf_sha256"]) == 64
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "/home/me/.cache/fedloom/models/x", "r": 16})
    )
    make_portable(tmp_path, prov)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg == {"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "r": 16}
    summary = {
        "task": "sft", "algorithm": "fedprox", "rounds_completed": 3, "num_clients": 4,
        "client_sizes": [5, 7, 9, 11], "base_eval_loss": {"all": 1.8}, "final_eval_loss": {"all": 1.7},
        "privacy": {"epsilon_max": 7.5},
    }  # fmt: skip
    run_cfg = {
        "federation": {"rounds": 3, "sample_clients": 2}, "lora": {"r": 16, "alpha": 32,
        "target_modules": ["q_proj", "v_proj"]}, "data": {"sources": [{"name": "alpaca"}]},
        "privacy": {"client_dp": {"delta": 1e-5}},
    }  # fmt: skip
    card = model_card(prov, run_cfg, summary, "fedloom run configs/demo.yaml")
    assert yaml.safe_load(card.split("---")[1])["base_model"] == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    for text in ("SmolLM2-135M-Instruct.Q4_1.gguf", "32 training examples over 4 clients",
                 "(ε = 7.5000, δ = 1e-05)", "base 1.8000 → 1.7000", "r 16, alpha 32, on q_proj, v_proj",
                 "fedloom run configs/demo.yaml", "fedloom models --path smollm2-135m-instruct"):  # fmt: skip
        assert text in card, text


def test_models_path_prints_the_local_base(capsys) -> None:  # type: ignore[no-untyped-def]
    from fedloom.cli import main

    assert main(["models", "--path", "tiny-llama"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / "config.json").exists() and (folder / "tokenizer_config.json").exists()
    assert main(["models"]) == 0
    assert "[HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1]" in capsys.readouterr().out


MERGED = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, out = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(folder).eval()
tok = AutoTokenizer.from_pretrained(folder)
assert tok.chat_template and not any(m.startswith("fedloom") for m in sys.modules)
ids = tok("Hello, how are you?", return_tensors="pt").input_ids
with torch.no_grad():
    torch.save((model(input_ids=ids).logits, str(model.dtype)), out)
"""


def test_export_adapter_and_merged_model(local_data: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from peft import PeftModel

    from fedloom.cli import main
    from fedloom.models import load_model
    from fedloom.models.loader import load_tokenizer

    cfg = tiny_config(local_data, **{"federation.rounds": 1})
    cfg.save(tmp_path / "c.yaml")
    run = tmp_path / "run"
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(run)]) == 0
    # the adapter with its card
    assert main(["export", str(run), "--out", str(tmp_path / "a")]) == 0
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "base_model.json"} <= {
        p.name for p in (tmp_path / "a").iterdir()
    }
    # merged, fp32 and bf16, loaded by plain transformers in a process without fedloom
    loaded = load_model(cfg.model)
    ours = PeftModel.from_pretrained(loaded.model, str(run / "adapter")).eval()
    ids = load_tokenizer("tiny-llama")("Hello, how are you?", return_tensors="pt").input_ids
    with torch.no_grad():
        want = ours(input_ids=ids).logits
    for dtype, tol in (("fp32", 1e-4), ("bf16", 0.1)):
        dest = tmp_path / f"m-{dtype}"
        assert main(["export", str(run), "--out", str(dest), "--merged", "--dtype", dtype]) == 0
        assert (dest / "model.safetensors").exists() and (dest / "generation_config.json").exists()
        assert "library_name: transformers" in (dest / "README.md").read_text()
        got = tmp_path / f"{dtype}.pt"
        proc = subprocess.run([sys.executable, "-c", MERGED, str(dest), str(got)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        logits, model_dtype = torch.load(got)
        assert model_dtype == ("torch.float32" if dtype == "fp32" else "torch.bfloat16")
        torch.testing.assert_close(logits.float(), want, atol=tol, rtol=tol)
    # bad input: one line each
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "a")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "has no config.yaml" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(tmp_path / "y"), "--adapter", "adapters/c9"]) == 2
    assert "this run has: adapter" in capsys.readouterr().err


def test_merged_export_is_served_by_transformers_serve(local_data: Path, tmp_path: Path) -> None:
    """The merged folder is a model `transformers serve` serves (a real server on loopback)."""
    import shutil as sh

    import pytest

    from fedloom.cli import main
    from fedloom.generation import GenerationConfig, OpenAIGenerator, run_complete
    from tests.test_openai_server import Server, _free_port

    if not Path(sys.executable).with_name("transformers").exists() and not sh.which("transformers"):
        pytest.skip("no `transformers` command in this environment")
    cfg = tiny_config(local_data, **{"federation.rounds": 1})
    cfg.save(tmp_path / "c.yaml")
    run, dest = tmp_path / "run", tmp_path / "merged"
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(run)]) == 0
    assert main(["export", str(run), "--out", str(dest), "--merged"]) == 0
    server = Server(str(dest), _free_port())
    server.start()
    try:
        gen = OpenAIGenerator(server.model, server.url, retries=0, backoff=0.01, timeout=30)
        rep = run_complete(gen, [("p0", "Say hello.")], GenerationConfig(max_new_tokens=4),
                           tmp_path / "g.jsonl", progress=False)  # fmt: skip
        assert (rep.generated, rep.failed) == (1, 0)
    finally:
        server.stop()
