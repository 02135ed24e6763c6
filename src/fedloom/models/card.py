"""Portable adapters: what a saved adapter says about its base model, and its model card.

PEFT writes the *local* folder the base was loaded from into `adapter_config.json`
(`base_model_name_or_path`), a path that exists only on the machine that trained. fedloom
replaces it by the published id of the model the GGUF quantises (where the registry knows one),
records the exact local base — the GGUF file, its sha256, its quantisation and the dtype it was
de-quantised to — in `base_model.json` beside the run, and writes a model card (`README.md`, the
Hugging Face model-card format: YAML metadata, then prose) beside each adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fedloom import __version__, utils
from fedloom.models.loader import content_hash
from fedloom.models.registry import TINY_LLAMA, get_model_spec


def base_provenance(name: str) -> dict[str, Any]:
    """What the run trained on: the registry name, the published id, and the local base."""
    spec = get_model_spec(name)
    out: dict[str, Any] = {"name": name, "hub_id": None, "local_base": None}
    if spec is None:  # a local folder or .gguf path
        return out | {"local_base": {"path": str(Path(name).expanduser().resolve())}}
    out["name"] = spec.name
    out["hub_id"] = spec.hub_id
    if spec.gguf is not None:
        gguf = spec.gguf()
        out["local_base"] = {
            "gguf_file": gguf.name,
            "gguf_sha256": content_hash(gguf),
            "quantization": spec.quantization,
            "dequantised_to": spec.cache_dtype,
            "folder": f"fedloom models --path {spec.name}",
        }
    elif spec.name == TINY_LLAMA:
        out["local_base"] = {"built": "a seeded random tiny Llama (tests only)"}
    return out


def make_portable(adapter: Path, provenance: dict[str, Any]) -> None:
    """Name the published base in ``adapter/adapter_config.json`` (where there is one)."""
    path = adapter / "adapter_config.json"
    cfg = json.loads(path.read_text())
    if provenance.get("hub_id"):
        cfg["base_model_name_or_path"] = provenance["hub_id"]
    else:  # no published id: the registry name, which fedloom resolves offline
        cfg["base_model_name_or_path"] = provenance["name"]
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def model_card(
    provenance: dict[str, Any],
    run_cfg: dict[str, Any],
    summary: dict[str, Any],
    command: str,
    adapter_name: str = "adapter",
) -> str:
    """The card's text: metadata (base model, library, tags) and what a user needs to know."""
    base = provenance.get("hub_id") or provenance["name"]
    meta = {
        "base_model": base,
        "library_name": "peft",
        "tags": ["fedloom", "federated-learning", "lora", str(summary.get("algorithm", ""))],
    }
    fed, lora, data = (
        run_cfg.get("federation", {}),
        run_cfg.get("lora", {}),
        run_cfg.get("data", {}),
    )
    sizes = summary.get("client_sizes") or []
    sources = [s.get("name", "?") + (f" ({s['path']})" if s.get("path") else "")
               for s in data.get("sources", [])]  # fmt: skip
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {adapter_name}: a LoRA adapter trained federated with fedloom",
        "",
        f"- **Base model**: `{base}`",
    ]
    local = provenance.get("local_base") or {}
    if local.get("gguf_file"):
        lines.append(
            f"- **Exact local base**: `{local['gguf_file']}` (sha256 `{local['gguf_sha256']}`), "
            f"{local['quantization']} de-quantised to {local['dequantised_to']}. The published "
            "checkpoint differs from it by the quantisation error: for the same base, load the "
            f"folder that `{local['folder']}` prints."
        )
    lines += [
        f"- **Task**: {summary.get('task')}; **algorithm**: {summary.get('algorithm')}, "
        f"{summary.get('rounds_completed')} of {fed.get('rounds')} rounds, "
        f"{fed.get('sample_clients')} of {summary.get('num_clients')} clients a round",
        f"- **LoRA**: r {lora.get('r')}, alpha {lora.get('alpha')}, on "
        f"{', '.join(lora.get('target_modules') or [])}",
        f"- **Data**: {', '.join(sources) or '—'}; {sum(sizes)} training examples over "
        f"{len(sizes)} clients (per client {min(sizes) if sizes else 0}–{max(sizes) if sizes else 0})",
    ]
    privacy = summary.get("privacy") or {}
    if privacy.get("epsilon_max") is not None or privacy.get("central_dp"):
        cdp = privacy.get("central_dp") or {}
        eps = privacy.get("epsilon_max", cdp.get("epsilon"))
        delta = (run_cfg.get("privacy", {}).get("client_dp") or run_cfg.get("privacy", {})
                 .get("central_dp") or {}).get("delta")  # fmt: skip
        lines.append(f"- **Privacy**: (ε = {_fmt(eps)}, δ = {delta}) differential privacy")
    else:
        lines.append("- **Privacy**: no differential privacy")
    base_loss, final_loss = summary.get("base_eval_loss"), summary.get("final_eval_loss")
    if isinstance(final_loss, dict):
        lines.append(
            f"- **Held-out loss** (mean response-token cross-entropy): base "
            f"{_fmt((base_loss or {}).get('all'))} → {_fmt(final_loss.get('all'))}"
        )
    for name, b in (summary.get("benchmarks") or {}).items():
        lines.append(f"- **{name}** (n {b.get('n')}): base {b.get('base')} → {b.get('final')}")
    lines += [
        f"- **fedloom** {__version__}; command: `{command}`",
        "",
        "## Use with plain transformers + PEFT",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "base = AutoModelForCausalLM.from_pretrained(BASE)  # the folder above, or the hub id",
        "model = PeftModel.from_pretrained(base, ADAPTER_DIR)",
        "tok = AutoTokenizer.from_pretrained(BASE)",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_cards(out: Path, run_cfg: dict[str, Any], summary: dict[str, Any]) -> None:
    """Make every adapter of the run in ``out`` portable, write its card, and the run's
    ``base_model.json``."""
    prov = base_provenance(run_cfg["model"]["name"])
    (out / "base_model.json").write_text(json.dumps(prov, indent=2))
    command = utils.INVOKED or "(called from Python)"
    command += f"; reproduce with: fedloom run {out / 'config.yaml'}"
    folders = [out / "adapter"] if (out / "adapter").is_dir() else []
    folders += sorted(p for p in (out / "adapters").glob("*") if p.is_dir())
    for folder in folders:
        make_portable(folder, prov)
        (folder / "README.md").write_text(model_card(prov, run_cfg, summary, command, folder.name))
