"""FedGC (Ye et al. 2023, "Federated learning empowered by generative content"): each client
generates extra data before federated training and merges it with its private data. The four
design axes, each a small registry: budget allocation (:mod:`.budget`), prompt design and
generation guidance (:mod:`.guidance`), training strategy (:mod:`.strategy`)."""

from fedloom.synth.fedgc.budget import BUDGETS, FedGCError, allocate_labels, largest_remainder
from fedloom.synth.fedgc.guidance import GUIDANCE, PROMPT_DESIGNS, guided_prompt, task_prompt
from fedloom.synth.fedgc.strategy import STRATEGIES

__all__ = [
    "BUDGETS",
    "GUIDANCE",
    "PROMPT_DESIGNS",
    "STRATEGIES",
    "FedGCError",
    "allocate_labels",
    "guided_prompt",
    "largest_remainder",
    "task_prompt",
]
