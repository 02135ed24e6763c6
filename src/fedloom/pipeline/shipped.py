"""Registers the pipelines fedloom ships (``u2s``, ``knowledgesg``, ``fedgc``, ``safety``,
``bench``). The command line imports this module; the runner does not (the pipelines sit above
it)."""

import fedloom.bench.pipeline  # noqa: F401
import fedloom.safety  # noqa: F401
import fedloom.synth  # noqa: F401
