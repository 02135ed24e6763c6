"""Stage 2: k pool examples per piece (retrieval by embedding cosine, random, or fixed)."""

from __future__ import annotations

from typing import Any

from fedloom.utils import rng_for

# --- stage 2: selection -----------------------------------------------------------------------


def select_examples(
    selection: str,
    k: int,
    seed: int,
    n: int,
    n_pool: int,
    piece_emb: Any = None,
    pool_emb: Any = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """k pool indices for each of ``n`` pieces (and their cosines; 0 for random/fixed);
    ``retrieval`` ranks by the embeddings."""
    if selection == "retrieval":
        from fedloom.embed import top_k

        idx, sims = top_k(piece_emb, pool_emb, k)
        return idx.tolist(), [[round(float(x), 4) for x in row] for row in sims]
    if selection == "fixed":
        fixed = rng_for(seed, "u2s-fixed").sample(range(n_pool), k)
        return [list(fixed) for _ in range(n)], [[0.0] * k for _ in range(n)]
    rng = rng_for(seed, "u2s-random")
    return [rng.sample(range(n_pool), k) for _ in range(n)], [[0.0] * k for _ in range(n)]
