"""Sentence embeddings and similarity: retrieval of few-shot examples (FedIT-U2S), near-duplicate
removal, TF-IDF similarity filters (KnowledgeSG).

emb = get_embedder("minilm")                 # all-MiniLM-L6-v2, offline from PyPI
idx, scores = top_k(emb.encode(queries), emb.encode(pool), k=3)
"""

from fedloom.embed.embedders import (
    EMBEDDERS,
    CachedEmbedder,
    Embedder,
    MiniLMEmbedder,
    TfidfEmbedder,
    get_embedder,
    register_embedder,
)
from fedloom.embed.similarity import (
    cosine_matrix,
    embedding_spread,
    frechet_distance,
    near_duplicates,
    tfidf_max_similarity,
    tfidf_pair_similarity,
    top_k,
)

__all__ = [
    "EMBEDDERS",
    "CachedEmbedder",
    "Embedder",
    "MiniLMEmbedder",
    "TfidfEmbedder",
    "cosine_matrix",
    "embedding_spread",
    "frechet_distance",
    "get_embedder",
    "near_duplicates",
    "register_embedder",
    "tfidf_max_similarity",
    "tfidf_pair_similarity",
    "top_k",
]
