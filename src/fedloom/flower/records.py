"""fedloom messages <-> Flower records. Adapters and algorithm tensors travel as
``ArrayRecord``s, round settings as a ``ConfigRecord``, client results as a ``MetricRecord``.

A state dict is packed into one flat array per dtype plus its layout (names, dtypes, shapes):
Flower moves every array of a message as a separate object, one request each through the
SuperNode and the SuperLink, and a LoRA adapter has hundreds of tensors (SmolLM2 r16 on
q,k,v,o: 240). Packed, a message is a handful of objects; the values are bit-identical.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedloom.algorithms.base import Broadcast, ClientUpdate
from fedloom.utils import StateDict

EXTRA = "extra."
STATE = "fedloom.state."


def scalar(value: object) -> float:
    """A record value that must be a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected a number in a Flower record, got {value!r}")


LAYOUT = "layout"
PACKED = "packed."


def to_record(state: StateDict) -> ArrayRecord:
    """``state`` as an ArrayRecord: ``packed.<dtype>`` (the tensors of that dtype, flattened
    and concatenated in order) and ``layout`` (JSON [name, dtype, shape] per tensor)."""
    layout: list[tuple[str, str, list[int]]] = []
    groups: dict[str, list[torch.Tensor]] = {}
    for name, t in state.items():
        dtype = str(t.dtype).removeprefix("torch.")
        layout.append((name, dtype, list(t.shape)))
        flat = t.detach().cpu().reshape(-1)
        # numpy has no bfloat16: its bits travel as int16
        groups.setdefault(dtype, []).append(
            flat.view(torch.int16) if t.dtype == torch.bfloat16 else flat
        )
    record = ArrayRecord()
    for dtype, parts in groups.items():
        record[PACKED + dtype] = Array(torch.cat(parts).numpy())
    record[LAYOUT] = Array(np.frombuffer(json.dumps(layout).encode(), dtype=np.uint8))
    return record


def from_record(record: ArrayRecord) -> StateDict:
    """The state dict :func:`to_record` packed (copies: numpy buffers are read-only)."""
    if LAYOUT not in record:
        raise ValueError(
            f"an ArrayRecord without {LAYOUT!r}: not packed by fedloom "
            f"(arrays: {sorted(record)[:5]}); server and clients must run the same fedloom"
        )
    layout = json.loads(record[LAYOUT].numpy().tobytes())
    flat = {k[len(PACKED) :]: torch.from_numpy(v.numpy()) for k, v in record.items() if k != LAYOUT}
    offset = dict.fromkeys(flat, 0)
    out: StateDict = {}
    for name, dtype, shape in layout:
        n = int(np.prod(shape, dtype=np.int64))
        part = flat[dtype][offset[dtype] : offset[dtype] + n]
        offset[dtype] += n
        if dtype == "bfloat16":
            part = part.view(torch.bfloat16)
        out[name] = part.reshape(shape).clone()
    return out


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
