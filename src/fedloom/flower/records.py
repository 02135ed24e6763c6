"""fedloom messages <-> Flower records. Adapters and algorithm tensors travel as
``ArrayRecord``s, round settings as a ``ConfigRecord``, client results as a ``MetricRecord``."""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedloom.algorithms.base import Broadcast, ClientUpdate
from fedloom.utils import StateDict

EXTRA = "extra."
STATE = "fedloom.state."


def scalar(value: object) -> float:
    """A record value that must be a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a number in a Flower record, got {value!r}")


def to_record(state: StateDict) -> ArrayRecord:
    return ArrayRecord.from_torch_state_dict(dict(state))


def from_record(record: ArrayRecord) -> StateDict:
    # copies: tensors from numpy buffers are read-only views
    return {k: v.clone() for k, v in record.to_torch_state_dict().items()}


def train_content(bc: Broadcast, round_idx: int, cid: int, lr: float) -> RecordDict:
    content = RecordDict({"adapter": to_record(bc.adapter)})
    for name, tensors in bc.extras.items():
        content[EXTRA + name] = to_record(tensors)
    content["config"] = ConfigRecord({"round": round_idx, "client-id": cid, "lr": lr})
    return content


def read_train(content: RecordDict) -> tuple[Broadcast, int, int, float]:
    cfg = content.config_records["config"]
    extras = {
        k[len(EXTRA) :]: from_record(v)
        for k, v in content.array_records.items()
        if k.startswith(EXTRA)
    }
    bc = Broadcast(from_record(content.array_records["adapter"]), extras)
    return bc, int(scalar(cfg["round"])), int(scalar(cfg["client-id"])), scalar(cfg["lr"])


def update_content(update: ClientUpdate) -> RecordDict:
    """The client's reply: its encoded adapter payload, extras, metrics."""
    content = RecordDict({"payload": to_record(update.payload)})
    for name, tensors in update.extras.items():
        content[EXTRA + name] = to_record(tensors)
    content["metrics"] = MetricRecord(
        {**update.metrics, "num-examples": update.num_examples, "client-id": update.client_id}
    )
    return content


def read_update(content: RecordDict) -> ClientUpdate:
    m = dict(content.metric_records["metrics"])
    extras = {
        k[len(EXTRA) :]: from_record(v)
        for k, v in content.array_records.items()
        if k.startswith(EXTRA)
    }
    cid, n = int(scalar(m.pop("client-id"))), int(scalar(m.pop("num-examples")))
    metrics = {k: scalar(v) for k, v in m.items()}
    payload = from_record(content.array_records["payload"])
    return ClientUpdate(cid, {}, n, extras, metrics, payload)


def load_client_state(state: RecordDict) -> dict[str, Any]:
    """A client's persistent algorithm state (SCAFFOLD's c_i) from its Flower Context."""
    return {
        k[len(STATE) :]: from_record(v)
        for k, v in state.array_records.items()
        if k.startswith(STATE)
    }


def save_client_state(state: RecordDict, client_state: dict[str, Any]) -> None:
    for k, v in client_state.items():
        state[STATE + k] = to_record(v)
