"""Evaluation: held-out loss per domain and greedy sample answers."""

from fedloom.eval.heldout import HeldoutEvaluator, generate_answers

__all__ = ["HeldoutEvaluator", "generate_answers"]
