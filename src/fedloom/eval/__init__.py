"""Evaluation: held-out loss per domain, offline benchmark suites, judges."""

from fedloom.eval.heldout import HeldoutEvaluator, generate_answers
from fedloom.eval.suites import SUITES, EvalContext, SuiteResult, run_suite

__all__ = [
    "SUITES",
    "EvalContext",
    "HeldoutEvaluator",
    "SuiteResult",
    "generate_answers",
    "run_suite",
]
