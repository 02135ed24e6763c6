"""The local backend: any model fedloom loads (bundled SmolLM2, a Hugging Face folder, a .gguf,
tiny-llama), batched with prompts sorted by length, left padding and the KV cache, with an
optional LoRA adapter that can be switched between calls (:meth:`LocalGenerator.adapter`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedloom.data.template import chat_prompt
from fedloom.generation.base import Generation, GenerationConfig, Prompt, cut_at_stop
from fedloom.models import get_adapter_state, set_adapter_state
from fedloom.utils import StateDict, rng_for, seeded_torch


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
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        # longest first: each batch pads to similar lengths, and memory peaks in the first batch
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        out: list[list[Generation]] = [[] for _ in texts]
        self.model.eval()
        side = self.tokenizer.padding_side
        try:
            self.tokenizer.padding_side = "left"
            for b, start in enumerate(range(0, len(order), cfg.batch_size)):
                idx = order[start : start + cfg.batch_size]
                for i, gens in zip(idx, self._batch([texts[i] for i in idx], cfg, b), strict=True):
                    out[i] = gens
        finally:
            self.tokenizer.padding_side = side
        return out

    def _batch(self, texts: list[str], cfg: GenerationConfig, b: int) -> list[list[Generation]]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            self.device
        )
        sample = cfg.temperature > 0
        kwargs = dict(
            max_new_tokens=cfg.max_new_tokens,
            do_sample=sample,
            num_return_sequences=cfg.n,
            repetition_penalty=cfg.repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if sample:
            kwargs |= dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
        seed = rng_for(cfg.seed, "generation", b).getrandbits(63)
        with seeded_torch(seed) if sample else contextlib.nullcontext():
            seqs = self.model.generate(**enc, **kwargs)  # type: ignore[operator]
        width = enc["input_ids"].shape[1]
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        result: list[list[Generation]] = []
        for p in range(len(texts)):
            gens = []
            for s in seqs[p * cfg.n : (p + 1) * cfg.n]:
                new = s[width:].tolist()
                ended = eos in new
                if ended:
                    new = new[: new.index(eos)]
                while new and new[-1] == pad and pad != eos:
                    new.pop()
                text = str(self.tokenizer.decode(new, skip_special_tokens=True))
                text, stopped = cut_at_stop(text, cfg.stop)
                reason = "stop" if ended or stopped else "length"
                prompt_len = int(enc["attention_mask"][p].sum())
                gens.append(Generation(text.strip(), len(new), reason, prompt_tokens=prompt_len))
            result.append(gens)
        return result
