"""Data-generation pipelines (``fedloom pipeline CONFIG``). Each method is a file that
registers itself with :data:`fedloom.pipeline.PIPELINES`:

* ``u2s`` — FedIT-U2S: clients turn their raw text into instruction pairs with few-shot
  examples retrieved from a shared pool, then federated instruction tuning (docs/u2s.md).
* ``knowledgesg`` — KnowledgeSG: DP-trained writer adapters travel, the server synthesises, a
  professional model filters and answers; with its baselines (docs/knowledgesg.md).
* ``fedgc`` — FedGC: clients add generated examples to skewed private data before federated
  training; the four design axes as registries (docs/fedgc.md).
"""

from fedloom.synth import knowledgesg, u2s  # noqa: F401  (register the methods)
from fedloom.synth.fedgc import stages as _fedgc  # noqa: F401  (registers `fedgc`)
