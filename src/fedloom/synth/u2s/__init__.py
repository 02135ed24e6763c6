"""FedIT-U2S (Ye et al. 2024, "unstructured to structured"): clients hold only raw text; each
turns its text pieces into instruction–response pairs with an LLM prompted by k examples
retrieved from a shared example pool, then the clients run federated instruction tuning on the
generated pairs. No public code exists; the choices here are documented in docs/u2s.md.

Stages (``fedloom pipeline configs/u2s.yaml``):

1. ``data`` — per domain, one seeded order of the source's records is cut into disjoint slices:
   gold pairs for evaluation, the example pool, and the clients' raw text (chunked into pieces at
   sentence boundaries, dealt to the domain's clients). Disjointness is asserted.
2. ``select`` — k pool examples per piece: ``retrieval`` (embedding cosine), ``random``, or
   ``fixed`` (the same k for everyone).
3. ``generate`` — one prompt per piece (task statement, the k examples, the piece, an output
   slot in a marked format); a resumable generation job.
4. ``parse`` — each output read back into an instruction record with provenance, or counted as
   a failure by reason; data-quality figures.
5. ``train`` — federated instruction tuning on each client's own generated pairs (any
   algorithm), held-out loss on the gold pairs of every domain.
6. ``evaluate`` — the matching suites on the base model and the tuned adapter, with every item
   used as client text or pool example left out.

``train_on: gold`` skips 2–4 and trains on the real pairs behind the clients' text (the upper
bound).
"""

from fedloom.synth.u2s.config import PROMPT_VERSION, SELECTIONS, DomainConfig, U2SConfig, U2SError
from fedloom.synth.u2s.data import build_data
from fedloom.synth.u2s.parse import (
    FAILURES,
    ParseReport,
    content_words,
    grounding,
    parse_generations,
)
from fedloom.synth.u2s.prompt import TASK, build_prompt
from fedloom.synth.u2s.retrieval import select_examples
from fedloom.synth.u2s.stages import U2S

__all__ = [
    "FAILURES",
    "PROMPT_VERSION",
    "SELECTIONS",
    "TASK",
    "U2S",
    "DomainConfig",
    "ParseReport",
    "U2SConfig",
    "U2SError",
    "build_data",
    "build_prompt",
    "content_words",
    "grounding",
    "parse_generations",
    "select_examples",
]
