"""Similarity math on hand-made vectors, the embedding cache, TF-IDF; MiniLM itself is slow."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.embed import (
    CachedEmbedder,
    TfidfEmbedder,
    cosine_matrix,
    embedding_spread,
    get_embedder,
    near_duplicates,
    tfidf_max_similarity,
    top_k,
)
from fedloom.embed.embedders import EmbedderError

POOL = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 2.0]])


def test_top_k_known_neighbours() -> None:
    queries = np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    idx, sims = top_k(queries, POOL, 2)
    # q0 is closest to e1 (cos 0.995), then (0.6, 0.8) (cos (0.6+0.08)/1.005 = 0.677)
    assert idx.tolist() == [[0, 2], [3, 0], [2, 0]]
    assert sims[0, 0] == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)
    assert sims[0, 1] == pytest.approx(0.68 / np.sqrt(1.01), abs=1e-6)
    assert sims[1, 0] == pytest.approx(1.0)  # scale does not matter: cosine
    # q2 = (.5,.5): (0.6,0.8) -> 0.7/0.7071 = 0.98995; e1 and e2 tie at 0.7071: lower index first
    assert sims[2, 0] == pytest.approx(0.7 / np.sqrt(0.5), abs=1e-6)
    with pytest.raises(ValueError, match="k = 5"):
        top_k(queries, POOL, 5)
    with pytest.raises(ValueError, match="widths differ"):
        cosine_matrix(queries, np.ones((2, 4)))


def test_near_duplicates_and_spread() -> None:
    emb = np.array([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0], [1.0, 0.0]])
    kept, dropped = near_duplicates(emb, 0.95)
    assert kept == [0, 2] and dropped == {1: 0, 3: 0}
    # two orthogonal rows: every distinct pair has cos 0 -> spread 1; identical rows -> 0
    assert embedding_spread(np.eye(2)) == pytest.approx(1.0)
    assert embedding_spread(np.ones((3, 2))) == pytest.approx(0.0)
    # (1,0), (1,0), (0,1): pairs 1, 0, 0 (each twice) -> mean cos 1/3 -> spread 2/3
    assert embedding_spread(np.array([[1.0, 0], [1, 0], [0, 1]])) == pytest.approx(2 / 3)


def test_tfidf_similarity_and_embedder() -> None:
    refs = ["the heart pumps blood", "solve the linear equation"]
    sims = tfidf_max_similarity(["the heart pumps blood", "paris france capital"], refs)
    assert sims[0] == pytest.approx(1.0) and sims[1] == pytest.approx(0.0)
    corpus = ["heart blood vessel", "equation variable solve", "capital city france"]
    emb = TfidfEmbedder(corpus)
    idx, _ = top_k(
        emb.encode(["blood in the heart", "solve for the variable"]), emb.encode(corpus), 1
    )
    assert idx[:, 0].tolist() == [0, 1]
    with pytest.raises(EmbedderError, match="unknown embedder"):
        get_embedder("nope")


def test_cache_embeds_each_text_once_and_persists(tmp_path) -> None:
    calls: list[list[str]] = []

    class Counting:
        name = "counting"

        def encode(self, texts):
            calls.append(list(texts))
            return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

    cached = CachedEmbedder(Counting())
    a = cached.encode(["ab", "abc", "ab"])
    b = cached.encode(["abc", "abcd"])
    assert calls == [["ab", "abc"], ["abcd"]]  # duplicates and repeats are not re-embedded
    assert a[0].tolist() == a[2].tolist() == [2.0, 1.0] and b[1].tolist() == [4.0, 1.0]
    cached.save(tmp_path / "emb")
    again = CachedEmbedder(Counting())
    assert again.load(tmp_path / "emb") == 3
    again.encode(["ab", "abcd"])
    assert len(calls) == 2  # everything came from the saved cache


@pytest.mark.slow
def test_minilm_ranks_by_meaning() -> None:
    emb = get_embedder("minilm")
    pool = ["Cardiology studies the heart and blood vessels.", "Paris is the capital of France."]
    idx, sims = top_k(
        emb.encode(["The heart pumps blood through the arteries."]), emb.encode(pool), 2
    )
    assert idx[0].tolist() == [0, 1] and sims[0, 0] > 0.4 > sims[0, 1]
