"""`fedloom export`: a run's adapter, or base + adapter merged into one plain model folder that
transformers (`AutoModelForCausalLM`), `transformers serve`, vLLM or llama.cpp's converter load
without fedloom."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from fedloom.errors import FedloomError

DTYPES = ("fp32", "bf16")


class ExportError(FedloomError, ValueError):
    """The run folder or the destination cannot be used."""


@dataclass
class Exported:
    folder: Path
    merged: bool
    files: list[str]


def _check(run: Path, adapter: str, dest: Path, dtype: str) -> Path:
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if not (run / "config.yaml").is_file():
        raise ExportError(f"{run} has no config.yaml: give a run folder of `fedloom run`")
    folder = run / adapter
    if not (folder / "adapter_config.json").is_file():
        have = sorted(
            p.name for p in [run / "adapter", *(run / "adapters").glob("*")] if p.is_dir()
        )
        raise ExportError(
            f"{folder} holds no adapter (adapter_config.json); this run has: "
            f"{', '.join(have) or 'none (not finished?)'} — pass --adapter adapters/client_N"
        )
    if dest.exists() and any(dest.iterdir()):
        raise ExportError(f"{dest} exists and is not empty: choose a new --out folder")
    return folder


def export_run(
    run: Path, dest: Path, merged: bool = False, dtype: str = "fp32", adapter: str = "adapter"
) -> Exported:
    """Copy the run's adapter (with its model card) to ``dest``, or merge it into the base
    model and save the whole model (safetensors, tokenizer with its chat template, generation
    config, card) in ``dtype``."""
    folder = _check(run, adapter, dest, dtype)
    if not merged:
        shutil.copytree(folder, dest, dirs_exist_ok=True)
    else:
        _merge(run, folder, dest, dtype)
    if (run / "base_model.json").is_file():
        shutil.copy(run / "base_model.json", dest / "base_model.json")
    return Exported(dest, merged, sorted(p.name for p in dest.iterdir()))


def _merge(run: Path, adapter: Path, dest: Path, dtype: str) -> None:
    import torch
    from peft import PeftModel

    from fedloom.config import load_config
    from fedloom.models.loader import load_model

    cfg = load_config(run / "config.yaml")
    loaded = load_model(cfg.model, dtype=torch.float32)  # merge in fp32, then cast
    model = PeftModel.from_pretrained(loaded.model, str(adapter)).merge_and_unload()
    model = model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    loaded.tokenizer.save_pretrained(dest)  # the chat template travels with the tokenizer
    card = (adapter / "README.md").read_text() if (adapter / "README.md").is_file() else ""
    note = (
        f"\n## This folder\n\nThe base model with the adapter above merged into its weights "
        f"(`fedloom export --merged --dtype {dtype}`): a plain model, loaded with "
        "`AutoModelForCausalLM.from_pretrained(FOLDER)` or served with `transformers serve "
        "FOLDER`; no PEFT needed.\n"
    )
    (dest / "README.md").write_text(
        card.replace("library_name: peft", "library_name: transformers") + note
    )
    (dest / "fedloom_export.json").write_text(
        json.dumps({"run": str(run.resolve()), "adapter": str(adapter.resolve()), "dtype": dtype})
    )
