"""KnowledgeSG (Wang et al., EMNLP 2024): private synthetic data through DP models, refined by a
professional model. The client DP-fine-tunes a *writer* adapter on its private data and sends
the adapter — never data — to the server; the server samples instructions from it, a stronger
professional model rates them and writes the responses, and the refined set trains the final
model. The baselines of the paper run through the same stages (:mod:`fedloom.synth.ksg_methods`).

Stages (``fedloom pipeline configs/knowledgesg.yaml``; a rerun skips finished cells):

1. ``data`` — private pairs (MedMCQA questions with the right option and its explanation) with
   canaries planted, disjoint held-out pairs for evaluation, public seed pairs (MedQA).
2. ``writer-dp`` / ``writer-plain`` — each client trains the writer adapter on its private pairs
   in the writer format (prompt: the task statement; target: ``Instruction: q / Response: a``),
   with client DP-SGD (ε composed over every step of the run) or without.
3. per method ``<m>.write`` — the server's prompts (task statement + examples by the method's
   rule; no private text unless the method is labelled leaky, asserted) sampled at T = 0.7;
   ``<m>.refine`` — parse, drop by reason (no markers, too short, TF-IDF > 0.52 to a shown
   example, duplicates), the professional rates and drops, responses written; data quality and
   canary leakage measured; ``<m>.train`` — the final model on the synthetic set (or, for
   ``non-private``, on the private data); ``<m>.evaluate`` — held-out loss paired against the
   base model, MedMCQA accuracy with every used item left out, free-form answers (judged when a
   judge is configured), canary exposure and extraction.
4. ``table`` — the method table (markdown, JSON, a plot).
"""

from fedloom.synth.knowledgesg.config import KSGConfig, KSGError
from fedloom.synth.knowledgesg.data import build_data
from fedloom.synth.knowledgesg.methods import KSG_METHODS, SynthMethod, register_ksg_method
from fedloom.synth.knowledgesg.prompts import (
    FAILURES,
    PROMPT_VERSION,
    TASK,
    parse_instruction,
    parse_rating_reply,
    writer_prompt,
    writer_target,
)
from fedloom.synth.knowledgesg.quality import canary_leaks, quality
from fedloom.synth.knowledgesg.stages import KnowledgeSG

__all__ = [
    "FAILURES",
    "KSG_METHODS",
    "PROMPT_VERSION",
    "TASK",
    "KSGConfig",
    "KSGError",
    "KnowledgeSG",
    "SynthMethod",
    "build_data",
    "canary_leaks",
    "parse_instruction",
    "parse_rating_reply",
    "quality",
    "register_ksg_method",
    "writer_prompt",
    "writer_target",
]
