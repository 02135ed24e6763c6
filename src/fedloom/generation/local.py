"""The local backend: any model fedloom loads (bundled SmolLM2, a Hugging Face folder, a .gguf,
tiny-llama), batched with prompts sorted by length, left padding and the KV cache, with an
optional LoRA adapter that can be switched between calls (:meth:`LocalGenerator.adapter`).

A batch's shared prompt prefix (the chat template's system turn, a task statement, few-shot
examples) is prefilled once and its KV cache copied to every sequence; each prompt's rest is
padded on the left of that rest (masked; position ids count real tokens only). What each
sequence attends to is exactly its own prompt, as without reuse (tests/test_generation.py
compares the tokens). vLLM's automatic prefix caching does this across requests behind the
openai backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedloom.data.template import chat_prompt
from fedloom.generation.base import Generation, GenerationConfig, Prompt, cut_at_stop
from fedloom.models import get_adapter_state, set_adapter_state
from fedloom.utils import StateDict, rng_for, seeded_torch

MIN_PREFIX = 16
"""Shared prompt tokens below which a batch prefills every prompt whole (a prefill of its own
and a cache copy per sequence cost more than they save)."""


def shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``rows`` share and a batch prefills once: their longest
    common prefix, less at least one token of the shortest row (generation needs logits to
    start from), or 0 under :data:`MIN_PREFIX`."""
    shortest = min(len(r) for r in rows)
    common = 0
    while common < shortest - 1 and all(r[common] == rows[0][common] for r in rows):
        common += 1
    return common if common >= MIN_PREFIX else 0


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, chat: bool) -> str:
    """The text a model sees: ``prompt`` through the tokenizer's chat template, or as is in raw
    continuation (``chat: false``, text prompts only)."""
    if not chat:
        if not isinstance(prompt, str):
            raise ValueError("raw continuation (`chat: false`) takes text prompts")
        return prompt
    return chat_prompt(tokenizer, prompt)


class LocalGenerator:
    def __init__(
        self,
        model: PreTrainedModel | PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        name: str = "local",
    ) -> None:
        self.model, self.tokenizer, self.device, self.name = model, tokenizer, device, name
        self.endpoint: str | None = None
        self.reuse_prefix = True
        """Prefill a batch's shared prompt prefix once (:meth:`_prefix`); False: every prompt
        whole (the benchmark's comparison)."""
        self.prefix_tokens_reused = 0
        """Prompt tokens the last :meth:`generate` call did not prefill again."""

    @contextlib.contextmanager
    def adapter(self, state: StateDict | None) -> Iterator[None]:
        """Generate with LoRA ``state`` loaded (None: the base model, adapter disabled); the
        adapter that was loaded before is back afterwards, bit for bit."""
        if not isinstance(self.model, PeftModel):
            raise TypeError("adapter switching needs a model with a LoRA adapter attached")
        if state is None:
            with self.model.disable_adapter():
                yield
            return
        saved = get_adapter_state(self.model)
        set_adapter_state(self.model, state)
        try:
            yield
        finally:
            set_adapter_state(self.model, saved)

    def render(self, prompt: Prompt, chat: bool) -> str:
        return render_prompt(self.tokenizer, prompt, chat)

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], cfg: GenerationConfig) -> list[list[Generation]]:
        texts = [self.render(p, cfg.chat) for p in prompts]
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        # longest first: each batch pads to similar lengths, and memory peaks in the first batch
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        out: list[list[Generation]] = [[] for _ in texts]
        self.model.eval()
        self.prefix_tokens_reused = 0
        for b, start in enumerate(range(0, len(order), cfg.batch_size)):
            idx = order[start : start + cfg.batch_size]
            for i, gens in zip(idx, self._batch([ids[i] for i in idx], cfg, b), strict=True):
                out[i] = gens
        return out

    def _prefix(self, rows: list[list[int]], n: int) -> tuple[int, Any]:
        """The prompts' longest shared token prefix, prefilled once and its KV cache copied to
        every sequence of the batch (``len(rows) * n``), or (0, None) where sharing saves little
        (a prefix under ``MIN_PREFIX`` tokens, one sequence). At least one token of each prompt
        stays out, so generation has logits to start from."""
        if len(rows) * n < 2 or not self.reuse_prefix:
            return 0, None
        common = shared_prefix(rows)
        if common == 0:
            return 0, None
        prefix = torch.tensor([rows[0][:common]], device=self.device)
        cache = self.model(input_ids=prefix, use_cache=True).cache
        cache.batch_repeat_interleave(len(rows) * n)
        self.prefix_tokens_reused += common * (len(rows) * n - 1)
        return common, cache

    def _batch(
        self, rows: list[list[int]], cfg: GenerationConfig, b: int
    ) -> list[list[Generation]]:
        """One batch: the shared prefix (if any) from its cache, then each prompt's rest padded
        on the left of that rest — pad positions are masked and position ids count only real
        tokens, so every sequence sees exactly its own prompt."""
        pad = self.tokenizer.pad_token_id
        n = cfg.n
        common, cache = self._prefix(rows, n)
        width = max(len(r) for r in rows)
        input_ids, mask = [], []
        for r in rows:
            gap = width - len(r)
            input_ids.append(r[:common] + [pad] * gap + r[common:])
            mask.append([1] * common + [0] * gap + [1] * (len(r) - common))
        enc = {
            "input_ids": torch.tensor(input_ids, device=self.device),
            "attention_mask": torch.tensor(mask, device=self.device),
        }
        sample = cfg.temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=cfg.max_new_tokens,
            do_sample=sample,
            num_return_sequences=n,
            repetition_penalty=cfg.repetition_penalty,
            pad_token_id=pad,
        )
        if cache is not None:
            # the cache already holds n rows per prompt: expand the prompts as generate would
            enc = {k: v.repeat_interleave(n, dim=0) for k, v in enc.items()}
            kwargs |= dict(num_return_sequences=1, cache=cache)
        if sample:
            kwargs |= dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
        seed = rng_for(cfg.seed, "generation", b).getrandbits(63)
        with seeded_torch(seed) if sample else contextlib.nullcontext():
            seqs = self.model.generate(**enc, **kwargs)  # type: ignore[operator]
        eos = self.tokenizer.eos_token_id
        result: list[list[Generation]] = []
        for p, r in enumerate(rows):
            gens = []
            for s in seqs[p * n : (p + 1) * n]:
                new = s[width:].tolist()
                ended = eos in new
                if ended:
                    new = new[: new.index(eos)]
                while new and new[-1] == pad and pad != eos:
                    new.pop()
                text = str(self.tokenizer.decode(new, skip_special_tokens=True))
                text, stopped = cut_at_stop(text, cfg.stop)
                reason = "stop" if ended or stopped else "length"
                gens.append(Generation(text.strip(), len(new), reason, prompt_tokens=len(r)))
            result.append(gens)
        return result
