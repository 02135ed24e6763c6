"""The onnx backend: a faster CPU runtime, ONNX Runtime GenAI (``pip install 'fedloom[onnx]'``).

A model fedloom loads (a registered model, a Hugging Face folder, a .gguf) is converted once by
the GenAI model builder (``python -m onnxruntime_genai.models.builder``) into an ONNX folder
cached under ``cache_dir()/onnx`` — int4 by default (weights re-quantised: fastest, and visibly
worse for the tiny models; see docs/generation.md), or int8 / fp32. Prompts are rendered with
the model's own Hugging Face tokenizer and chat template, exactly as the local backend does, and
batched longest-first with right padding (the runtime masks it). No LoRA adapters: generating
from a client's adapter (KnowledgeSG) stays on the local backend.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from fedloom.errors import FedloomError
from fedloom.generation.base import Generation, GenerationConfig, Prompt, cut_at_stop
from fedloom.generation.local import render_prompt
from fedloom.utils import cache_dir, rng_for

PRECISIONS = ("int4", "int8", "fp32")
INSTALL_HINT = "pip install 'fedloom[onnx]'  (onnxruntime-genai, onnx, onnx-ir)"


class OnnxBuildError(FedloomError):
    """The ONNX Runtime GenAI builder could not convert the model."""


def _import_og() -> Any:
    try:
        import onnxruntime_genai as og
    except ImportError as e:
        raise FedloomError(
            f"`generator.backend: onnx` needs ONNX Runtime GenAI, which is not installed: "
            f"{INSTALL_HINT}"
        ) from e
    return og


def build_onnx(hf_folder: Path, precision: str = "int4", dest: Path | None = None) -> Path:
    """The ONNX GenAI folder for ``hf_folder`` (config.json, safetensors, tokenizer), built once
    (atomically: a temporary folder renamed into place) and cached by the source folder's path,
    contents and ``precision``."""
    if precision not in PRECISIONS:
        raise FedloomError(f"onnx precision is {precision!r}; use one of {PRECISIONS}")
    if not (hf_folder / "config.json").exists():
        raise FedloomError(f"{hf_folder} is not a Hugging Face model folder (no config.json)")
    if dest is None:
        stamp = "".join(
            f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns};"
            for p in sorted(hf_folder.iterdir())
            if p.is_file()
        )
        key = hashlib.sha256(f"{hf_folder.resolve()}|{stamp}".encode()).hexdigest()[:12]
        dest = cache_dir() / "onnx" / f"{hf_folder.name}-{precision}-{key}"
    if (dest / "genai_config.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    log = dest.parent / f"{dest.name}.build.log"
    cmd = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        *("-i", str(hf_folder), "-o", str(tmp / "out"), "-p", precision, "-e", "cpu"),
        *("-c", str(tmp / "cache")),
    ]
    try:
        with open(log, "w") as fh:
            rc = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=_offline_env()
            ).returncode
        if rc != 0 or not (tmp / "out" / "genai_config.json").exists():
            raise OnnxBuildError(
                f"the ONNX GenAI builder failed on {hf_folder} (exit {rc}); its log: {log}"
            )
        os.replace(tmp / "out", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _offline_env() -> dict[str, str]:
    # the builder reads only the local folder; never let it reach for a hub
    return os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class OnnxGenerator:
    """Generates with an ONNX GenAI folder (see :func:`build_onnx`); ``tokenizer``: the model's
    Hugging Face tokenizer (prompts are templated and tokenised exactly as on the local
    backend)."""

    def __init__(
        self, folder: Path, tokenizer: PreTrainedTokenizerBase, name: str = "onnx"
    ) -> None:
        self.og = _import_og()
        self.model = self.og.Model(str(folder))
        self.tokenizer, self.name, self.folder = tokenizer, name, folder
        self.endpoint: str | None = None
        pad = tokenizer.pad_token_id
        self.pad = int(pad if pad is not None else tokenizer.eos_token_id)

    def render(self, prompt: Prompt, chat: bool) -> str:
        return render_prompt(self.tokenizer, prompt, chat)

    def generate(self, prompts: Sequence[Prompt], cfg: GenerationConfig) -> list[list[Generation]]:
        ids = [
            self.tokenizer(self.render(p, cfg.chat), add_special_tokens=False)["input_ids"]
            for p in prompts
        ]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[list[Generation]] = [[] for _ in ids]
        for b, start in enumerate(range(0, len(order), cfg.batch_size)):
            idx = order[start : start + cfg.batch_size]
            for i, gens in zip(idx, self._batch([ids[i] for i in idx], cfg, b), strict=True):
                out[i] = gens
        return out

    def _batch(
        self, batch: list[list[int]], cfg: GenerationConfig, b: int
    ) -> list[list[Generation]]:
        import numpy as np

        width = max(len(x) for x in batch)
        # right padding: the runtime builds the attention mask from the pad id and reads each
        # row's logits at its last real token (checked against transformers in the tests)
        arr = np.array([x + [self.pad] * (width - len(x)) for x in batch], dtype=np.int32)
        arr = np.repeat(arr, cfg.n, axis=0)
        params = self.og.GeneratorParams(self.model)
        options: dict[str, Any] = dict(
            max_length=width + cfg.max_new_tokens,
            batch_size=len(batch) * cfg.n,
            do_sample=cfg.temperature > 0,
            repetition_penalty=cfg.repetition_penalty,
        )
        if cfg.temperature > 0:
            seed = rng_for(cfg.seed, "generation", b).getrandbits(31)
            options |= dict(
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                top_k=cfg.top_k or 0,
                random_seed=seed,
            )
        params.set_search_options(**options)
        gen = self.og.Generator(self.model, params)
        gen.append_tokens(arr)
        while not gen.is_done():
            gen.generate_next_token()
        eos = self.tokenizer.eos_token_id
        result: list[list[Generation]] = []
        for p, prompt in enumerate(batch):
            gens = []
            for r in range(p * cfg.n, (p + 1) * cfg.n):
                new = [int(t) for t in gen.get_sequence(r)[width:]]
                ended = eos in new
                if ended:
                    new = new[: new.index(eos)]
                text = str(self.tokenizer.decode(new, skip_special_tokens=True))
                text, stopped = cut_at_stop(text, cfg.stop)
                reason = "stop" if ended or stopped else "length"
                gens.append(Generation(text.strip(), len(new), reason, prompt_tokens=len(prompt)))
            result.append(gens)
        return result
