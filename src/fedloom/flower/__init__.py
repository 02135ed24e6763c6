"""Flower runtime for fedloom: the same strategies, trainer and partitions as the in-process
engine, with clients as Flower ClientApps on SuperNodes (simulation or real deployment).

Flower is imported lazily: ``fedloom run`` without ``--engine flower-sim`` never loads it.
"""

import os

# offline: no telemetry, no update check, no installing an app's dependencies at run time
for _k, _v in (
    ("FLWR_TELEMETRY_ENABLED", "0"),
    ("FLWR_DISABLE_UPDATE_CHECK", "1"),
    ("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1"),
):
    os.environ.setdefault(_k, _v)
