"""Pure similarity math on L2-normalised embedding matrices (rows are texts)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check(a: np.ndarray, name: str) -> None:
    if a.ndim != 2:
        raise ValueError(f"{name} must be a (texts, dim) matrix, got shape {a.shape}")


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, d) x (m, d) -> (n, m) cosine similarities (rows normalised here, zero rows give 0)."""
    _check(a, "a")
    _check(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding widths differ: {a.shape[1]} vs {b.shape[1]}")
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    a_ = a / np.where(na == 0, 1, na)
    b_ = b / np.where(nb == 0, 1, nb)
    return np.asarray(a_ @ b_.T)


def top_k(queries: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n, k) of each query's k most similar pool rows, most similar first, and their
    cosines (n, k). Ties go to the lower pool index (stable)."""
    if not 1 <= k <= pool.shape[0]:
        raise ValueError(f"k = {k} must be in [1, pool size {pool.shape[0]}]")
    sims = cosine_matrix(queries, pool)  # (n, m)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # (n, k)
    return idx, np.take_along_axis(sims, idx, axis=1)


def near_duplicates(emb: np.ndarray, threshold: float) -> tuple[list[int], dict[int, int]]:
    """Greedy de-duplication in order: a row is dropped when its cosine to an earlier kept row
    is >= ``threshold``. Returns (kept indices, {dropped index: the kept index it repeats})."""
    sims = cosine_matrix(emb, emb)
    kept: list[int] = []
    dropped: dict[int, int] = {}
    for i in range(emb.shape[0]):
        match = next((j for j in kept if sims[i, j] >= threshold), None)
        if match is None:
            kept.append(i)
        else:
            dropped[i] = match
    return kept, dropped


def embedding_spread(emb: np.ndarray) -> float:
    """Mean pairwise cosine distance (1 - cos) over distinct pairs: 0 when all texts embed
    alike, higher for more diverse data."""
    n = emb.shape[0]
    if n < 2:
        return 0.0
    sims = cosine_matrix(emb, emb)
    off = sims[~np.eye(n, dtype=bool)]
    return float(1.0 - off.mean())


def tfidf_max_similarity(texts: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """For each text, its highest TF-IDF cosine to any reference (the vocabulary is fitted on
    both); KnowledgeSG drops generated instructions above 0.52 to their few-shot examples."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not texts:
        return np.zeros(0)
    if not references:
        return np.zeros(len(texts))
    vec = TfidfVectorizer().fit(list(texts) + list(references))
    sims = (vec.transform(texts) @ vec.transform(references).T).toarray()  # rows are unit norm
    return np.asarray(sims.max(axis=1))


def tfidf_pair_similarity(a: str, b: str) -> float:
    """TF-IDF cosine of two texts with the vocabulary fitted on just these two (as KnowledgeSG's
    filter does: a generated instruction against one few-shot example); 0 when either has no
    word."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        m = TfidfVectorizer().fit_transform([a, b])
    except ValueError:  # no word in either text
        return 0.0
    return float((m[0] @ m[1].T).toarray()[0, 0])


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (rows):
    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). Lower: the distributions are closer.
    Needs >= 2 rows each; with fewer rows than dimensions the covariances are singular and the
    figure is noisy — compare methods on equal sample sizes."""
    from scipy import linalg

    _check(a, "a")
    _check(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least 2 rows in each set")
    mu = a.mean(axis=0) - b.mean(axis=0)
    sa = np.atleast_2d(np.cov(a, rowvar=False))
    sb = np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(sa @ sb)
    root = np.real(root)
    return float(max(0.0, mu @ mu + np.trace(sa) + np.trace(sb) - 2.0 * np.trace(root)))
