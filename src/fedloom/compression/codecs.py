"""The codecs (one class each) and their registry."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from fedloom.utils import StateDict


class Codec:
    name: ClassVar[str]
    sends_update: ClassVar[bool] = True
    """True: encodes Δ = adapter − received adapter; False: the adapter itself."""

    def encode(
        self, tensors: StateDict, client_state: dict[str, Any]
    ) -> tuple[StateDict, dict[str, Any]]:
        """The payload (flat name -> tensor) and the client's new state (error feedback)."""
        raise NotImplementedError

    def decode(self, payload: StateDict, like: StateDict) -> StateDict:
        """Tensors shaped like ``like`` from a payload."""
        raise NotImplementedError


CODECS: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    if cls.name in CODECS:
        raise ValueError(f"codec {cls.name!r} is already registered")
    CODECS[cls.name] = cls
    return cls


@register_codec
class NoCompression(Codec):
    name = "none"
    sends_update = False

    def encode(
        self, tensors: StateDict, client_state: dict[str, Any]
    ) -> tuple[StateDict, dict[str, Any]]:
        return dict(tensors), client_state

    def decode(self, payload: StateDict, like: StateDict) -> StateDict:
        return dict(payload)


@register_codec
class Fp16(Codec):
    name = "fp16"

    def encode(
        self, tensors: StateDict, client_state: dict[str, Any]
    ) -> tuple[StateDict, dict[str, Any]]:
        return {k: v.to(torch.float16) for k, v in tensors.items()}, client_state

    def decode(self, payload: StateDict, like: StateDict) -> StateDict:
        return {k: payload[k].to(like[k].dtype) for k in like}


def _groups(v: torch.Tensor) -> torch.Tensor:
    """2-D view whose rows are the quantisation groups: one group per index of the tensor's
    shorter axis (LoRA A [r, d] -> r rows; B [d, r] -> r columns), so scales stay few."""
    m = v.reshape(v.shape[0], -1) if v.dim() > 1 else v.reshape(1, -1)
    return m if m.shape[0] <= m.shape[1] else m.t()


@register_codec
class Int8(Codec):
    """Symmetric quantisation per group (row or column, see :func:`_groups`):
    q = round(x / s), s = max|group| / 127; error ≤ s/2 per entry."""

    name = "int8"

    def encode(
        self, tensors: StateDict, client_state: dict[str, Any]
    ) -> tuple[StateDict, dict[str, Any]]:
        out: StateDict = {}
        for k, v in tensors.items():
            g = _groups(v.to(torch.float32))
            scale = g.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            out[f"{k}::q"] = torch.round(g / scale[:, None]).clamp(-127, 127).to(torch.int8)
            out[f"{k}::scale"] = scale
        return out, client_state

    def decode(self, payload: StateDict, like: StateDict) -> StateDict:
        out: StateDict = {}
        for k, v in like.items():
            g = payload[f"{k}::q"].to(torch.float32) * payload[f"{k}::scale"][:, None]
            m = v.reshape(v.shape[0], -1) if v.dim() > 1 else v.reshape(1, -1)
            g = g if m.shape[0] <= m.shape[1] else g.t()
            out[k] = g.reshape(v.shape).to(v.dtype)
        return out


@register_codec
class TopK(Codec):
    """Top-k sparsification with error feedback (Stich et al. 2018; Karimireddy et al. 2019)."""

    name = "topk"

    def __init__(self, fraction: float = 0.1) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"topk fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction

    def encode(
        self, tensors: StateDict, client_state: dict[str, Any]
    ) -> tuple[StateDict, dict[str, Any]]:
        residual: StateDict = client_state.get("topk_residual", {})
        out: StateDict = {}
        new_residual: StateDict = {}
        for k, v in tensors.items():
            full = v.flatten().to(torch.float32) + residual.get(k, torch.zeros(v.numel()))
            n_keep = max(1, math.ceil(self.fraction * full.numel()))
            idx = full.abs().topk(n_keep).indices
            vals = full[idx]
            out[f"{k}::idx"] = idx.to(torch.int32)
            out[f"{k}::val"] = vals
            sent = torch.zeros_like(full)
            sent[idx] = vals
            new_residual[k] = full - sent
        return out, {**client_state, "topk_residual": new_residual}

    def decode(self, payload: StateDict, like: StateDict) -> StateDict:
        out: StateDict = {}
        for k, v in like.items():
            flat = torch.zeros(v.numel(), dtype=torch.float32)
            flat[payload[f"{k}::idx"].long()] = payload[f"{k}::val"]
            out[k] = flat.reshape(v.shape).to(v.dtype)
        return out


def get_codec(name: str, topk_fraction: float = 0.1) -> Codec:
    if name not in CODECS:
        raise ValueError(f"unknown compression {name!r}; choose one of {sorted(CODECS)}")
    return TopK(topk_fraction) if name == "topk" else CODECS[name]()
