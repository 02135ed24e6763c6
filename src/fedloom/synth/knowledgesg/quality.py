"""Privacy and quality figures of a synthetic set: canaries in it, and its quality against the private pairs."""

from __future__ import annotations

import random
import re
from typing import Any

from fedloom.synth.common import (
    distinct_n,
)

# --- privacy and quality figures --------------------------------------------------------------


def canary_leaks(texts: list[str], canaries: list[dict[str, str]]) -> dict[str, Any]:
    """Canaries found in synthetic texts: ``exact`` (the secret appears), ``fuzzy`` (the
    canary's name appears, or a digit run of the secret's length differing in at most one
    digit)."""
    exact, fuzzy = [], []
    joined = "\n".join(texts)
    runs = re.findall(r"\d+", joined)
    low = joined.lower()
    for c in canaries:
        s = c["secret"]
        if s in joined:
            exact.append(c["name"])
            fuzzy.append(c["name"])
            continue
        close = any(
            len(r) == len(s) and sum(a != b for a, b in zip(r, s, strict=True)) <= 1 for r in runs
        )
        if close or c["name"].lower() in low:
            fuzzy.append(c["name"])
    return {"exact": len(exact), "fuzzy": len(fuzzy), "exact_names": exact, "fuzzy_names": fuzzy}


def quality(rows: list[dict[str, Any]], private: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Data quality of a synthetic set against the private data: distinct-1/2, the Fréchet
    distance of their MiniLM embeddings (equal sample sizes), and how close synthetic
    instructions come to private ones (TF-IDF)."""
    from fedloom.embed import frechet_distance, get_embedder, tfidf_max_similarity

    texts = [f"{r['instruction']} {r['response']}" for r in rows]
    out: dict[str, Any] = {
        "distinct_1": round(distinct_n(texts, 1), 4),
        "distinct_2": round(distinct_n(texts, 2), 4),
    }
    real = [r for r in private if not r.get("canary")]
    if len(rows) >= 2:
        n = min(len(rows), len(real))
        sample = random.Random(f"ksg-fd:{seed}").sample(real, n)
        priv_texts = [f"{r['instruction']} {r['response']}" for r in sample]
        emb = get_embedder("minilm", texts + priv_texts)
        out["frechet_distance"] = round(
            frechet_distance(emb.encode(texts[:n]), emb.encode(priv_texts)), 4
        )
        out["frechet_n"] = n
        sims = tfidf_max_similarity(
            [r["instruction"] for r in rows], [r["instruction"] for r in real]
        )
        out["max_private_similarity_mean"] = round(float(sims.mean()), 4)
        out["above_0.52_to_private"] = int((sims > 0.52).sum())
    return out
