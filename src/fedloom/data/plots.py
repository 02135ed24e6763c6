"""Plot of a federated split: stacked label counts per client."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fedloom.data.federated import FederatedData


def plot_split(data: FederatedData, key: str, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [
        Counter(str(data.train_records[i].metadata.get(key)) for i in idx) for idx in data.clients
    ]
    labels = sorted({lab for c in counts for lab in c})
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(counts) + 2), 4))
    bottom = [0] * len(counts)
    for lab in labels:
        vals = [c.get(lab, 0) for c in counts]
        ax.bar(range(len(counts)), vals, bottom=bottom, label=lab)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xlabel("client")
    ax.set_ylabel("training examples")
    ax.set_title(f"examples per client by `{key}`")
    ax.set_xticks(range(len(counts)))
    if len(labels) <= 20:
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
