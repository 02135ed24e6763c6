"""Load a base model and its tokenizer.

Names understood by :func:`load_model`: the registered models (:mod:`fedloom.models.registry`:
SmolLM2-135M-Instruct, the Qwen2.5-Coder generators, ``tiny-llama`` for tests), a local Hugging
Face model folder, or a path to a ``.gguf`` file. A GGUF is de-quantised once into a cached
safetensors folder; later loads take well under a second.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from fedloom.models.registry import (
    MODELS,
    SMOLLM2_GGUF,
    TINY_LLAMA,
    ModelNotFoundError,
    get_model_spec,
)
from fedloom.settings import ModelConfig
from fedloom.utils import (
    available_cores,
    bound_onednn_cache,
    cache_dir,
    keep_freed_memory,
    seeded_torch,
)

TINY_LLAMA_CONFIG: dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    autocast_dtype: torch.dtype | None
    """bf16 when training/evaluating under autocast, None for plain fp32."""
    name: str


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (AVX512-BF16 or AMX); without them bf16 is emulated."""
    fn = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((fn and fn()) or (amx and amx()))


def resolve_runtime(cfg: ModelConfig) -> tuple[torch.device, torch.dtype | None]:
    """Pick device and autocast dtype; on CPU also set torch threads to the available cores,
    keep freed memory for reuse (:func:`fedloom.utils.keep_freed_memory`) and bound oneDNN's
    primitive cache (:func:`fedloom.utils.bound_onednn_cache`)."""
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("`model.device` is cuda but no CUDA device is visible; use `auto`")
    if device.type == "cpu":
        torch.set_num_threads(available_cores())
        keep_freed_memory()
        bound_onednn_cache()
    if cfg.precision == "fp32":
        return device, None
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    if cfg.precision == "bf16" or native:
        return device, torch.bfloat16
    return device, None


def weights_dtype(device: torch.device) -> torch.dtype:
    """The dtype to hold weights in for generation: bf16 where the hardware computes it natively
    (2.3x faster than fp32 for SmolLM2 at batch 8 on an AVX512-BF16 CPU; autocast is not), else
    fp32."""
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    return torch.bfloat16 if native else torch.float32


def _convert_gguf(
    gguf_path: Path, dest: Path, with_model: bool = True, dtype: str = "float32"
) -> None:
    """De-quantise a GGUF file into a plain safetensors folder (atomically: temp dir, rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        tok.save_pretrained(tmp)
        if with_model:
            gguf_model = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
            )
            # A GGUF-loaded model refuses save_pretrained (its quantizer is attached): rebuild a
            # plain model of the same config and copy the de-quantised weights in.
            cfg = gguf_model.config.to_dict()
            cfg.pop("quantization_config", None)
            plain = type(gguf_model)(type(gguf_model.config).from_dict(cfg))
            plain.load_state_dict(gguf_model.state_dict(), strict=True)
            del gguf_model
            plain.to(getattr(torch, dtype)).save_pretrained(tmp)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def content_hash(path: Path) -> str:
    """The file's sha256, computed once per (path, size, mtime) and remembered in the cache's
    ``gguf-hashes.json`` (hashing a 1 GB GGUF takes seconds; a changed file is hashed again)."""
    st = path.stat()
    stamp = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    index_path = cache_dir() / "gguf-hashes.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if stamp in index:
        return str(index[stamp])
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    index[stamp] = digest.hexdigest()
    tmp = index_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, index_path)  # a concurrent writer's entry may be lost: it is recomputed
    return str(index[stamp])


def _gguf_cache(gguf_path: Path, what: str, dtype: str = "float32") -> Path:
    """The de-quantised folder of a GGUF file, one per *content* (every checkout and copy of the
    same file shares it). Two processes asking at once: one converts under a lock, the other
    waits and reuses its result."""
    key = content_hash(gguf_path)[:16]
    dest = cache_dir() / "models" / f"{gguf_path.stem}-{what}-{dtype}-{key}"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not dest.exists():  # the process that held the lock may have built it
            _convert_gguf(gguf_path, dest, with_model=(what == "model"), dtype=dtype)
    return dest


def _model_folder(name: str, what: str) -> Path:
    """The cached safetensors folder of a registered model (``what``: model or tokenizer), or
    a local folder / converted .gguf path."""
    if name == TINY_LLAMA:
        return _gguf_cache(SMOLLM2_GGUF(), "tokenizer")
    spec = get_model_spec(name)
    if spec is not None and spec.gguf is not None:
        return _gguf_cache(spec.gguf(), what, spec.cache_dtype)
    return _resolve_local(name)


def hf_folder(name: str, seed: int = 0) -> Path:
    """A Hugging Face folder (config, safetensors weights, tokenizer) holding model ``name``,
    for tools that read one (the ONNX GenAI builder). tiny-llama (built in memory) is saved once
    per ``seed`` into the cache."""
    if name != TINY_LLAMA:
        folder = _model_folder(name, "model")
        if not (folder / "tokenizer_config.json").exists():
            raise ModelNotFoundError(f"{folder} has no tokenizer files; save the tokenizer there")
        return folder
    dest = cache_dir() / "models" / f"tiny-llama-seed{seed}"
    if not (dest / "config.json").exists():
        tok = load_tokenizer(TINY_LLAMA)
        tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=cache_dir() / "models"))
        build_tiny_llama(len(tok), seed).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, dest)
    return dest


def load_tokenizer(name: str, need_chat: bool = True) -> PreTrainedTokenizerBase:
    """``need_chat``: refuse a tokenizer without a chat template (training formats examples
    with it); generation in raw mode passes False so base models work."""
    tok = AutoTokenizer.from_pretrained(_model_folder(name, "tokenizer"))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if need_chat and tok.chat_template is None:
        raise ModelNotFoundError(
            f"tokenizer of {name!r} has no chat template; fedloom formats instructions with the "
            "model's own template — use an instruction-tuned model (base models generate in "
            "raw mode: `chat: false`)"
        )
    return tok


def _resolve_local(name: str) -> Path:
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return _gguf_cache(path, "model")
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise ModelNotFoundError(
        f"model {name!r} not found: use a registered model ({', '.join(sorted(MODELS))}; "
        "`fedloom models`), a local Hugging Face model folder (with config.json) or a .gguf path"
    )


def build_tiny_llama(vocab_size: int, seed: int) -> LlamaForCausalLM:
    # weight init draws from the global generator: seeded, restored, one thread at a time
    with seeded_torch(seed):
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **TINY_LLAMA_CONFIG))


def load_model(
    cfg: ModelConfig,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """The model and its tokenizer (``tokenizer``: one already loaded by
    :func:`load_tokenizer` for the same name, e.g. to build the data before the weights).
    ``dtype``: the weights' dtype; by default the precision's — the frozen base is held in
    bf16 when training and evaluation compute in bf16 (LoRA weights stay fp32: PEFT keeps
    adapters in fp32, autocast runs their matmuls in bf16), else fp32. Held in fp32 under
    autocast instead, every frozen weight was cast to bf16 at every forward and the cast copy
    kept for the backward: 1.24x slower and ~0.5 GB more per step on SmolLM2 (docs/performance.md).
    Generation passes bf16 where native (:func:`weights_dtype`)."""
    device, autocast_dtype = resolve_runtime(cfg)
    if dtype is None:
        dtype = autocast_dtype or torch.float32
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.name)
    if cfg.name == TINY_LLAMA:
        model: PreTrainedModel = build_tiny_llama(len(tokenizer), cfg.seed)
        model.to(dtype)  # type: ignore[arg-type]
    else:
        model = AutoModelForCausalLM.from_pretrained(_model_folder(cfg.name, "model"), dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
        model.enable_input_require_grads()
    model.to(device)  # type: ignore[arg-type]
    return LoadedModel(model, tokenizer, device, autocast_dtype, cfg.name)
