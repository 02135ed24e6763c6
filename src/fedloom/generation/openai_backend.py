"""The OpenAI-compatible backend: any server speaking the OpenAI API (vLLM, llama.cpp server,
Ollama, a hosted API) — how generation scales past one CPU. Requests run concurrently (up to
``concurrency``), each with a timeout; a failed request is retried with exponential backoff and,
if it still fails, recorded in its :class:`Generation` (``error``) instead of stopping the job
(:func:`~fedloom.generation.run_job` writes it as an error row and retries it on the next run).

A server that ignores ``n`` (llama.cpp's, ``transformers serve``) returns one sample per request:
the backend asks again, with the next seeds, for the samples still missing, and fails the prompt
(named, retried) if a request returns none.

Sampling settings outside the OpenAI API (``top_k``, ``repetition_penalty``) are sent in the
request body's extra fields, which vLLM reads and other servers ignore.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fedloom.generation.base import Generation, GenerationConfig, Prompt, cut_at_stop


class OpenAIGenerator:
    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
    ) -> None:
        from openai import OpenAI

        self.model, self.name, self.base_url = model, f"openai:{model}", base_url
        self.endpoint: str | None = base_url
        self.concurrency, self.retries, self.backoff = concurrency, retries, backoff
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        # our own retry loop (counted, with backoff); the client's is off
        self.client = OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0)
        self.jitter = random.Random(0)

    def generate(self, prompts: Sequence[Prompt], cfg: GenerationConfig) -> list[list[Generation]]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda p: self._one(p, cfg), prompts))

    def _one(self, prompt: Prompt, cfg: GenerationConfig) -> list[Generation]:
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return self._request(prompt, cfg)
            except Exception as e:  # noqa: BLE001  (retried, then recorded)
                last = f"{type(e).__name__}: {e}"[:300]
                if attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt * (1 + 0.1 * self.jitter.random()))
        # the endpoint is named: a connection error is about the server, not the prompt
        error = f"{self.base_url}: {self.retries + 1} attempts: {last}"
        return [Generation("", 0, "error", error=error)] * cfg.n

    def _request(self, prompt: Prompt, cfg: GenerationConfig) -> list[Generation]:
        """``cfg.n`` samples: asked for at once, then (a server that ignores ``n``) asked again
        for the missing ones with the following seeds."""
        out: list[Generation] = []
        seed = cfg.seed
        while len(out) < cfg.n:
            got = self._ask(prompt, cfg, cfg.n - len(out), seed)
            if not got:
                raise ValueError(f"the server returned no sample (asked for {cfg.n - len(out)})")
            out, seed = out + got, seed + 1
        return out[: cfg.n]

    def _ask(self, prompt: Prompt, cfg: GenerationConfig, n: int, seed: int) -> list[Generation]:
        common: dict[str, Any] = dict(
            model=self.model,
            max_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            n=n,
            seed=seed,
        )
        if cfg.stop:
            common["stop"] = cfg.stop[:4]  # the API takes up to 4; the rest are cut here
        extra: dict[str, Any] = {}
        if cfg.top_k:
            extra["top_k"] = cfg.top_k
        if cfg.repetition_penalty != 1.0:
            extra["repetition_penalty"] = cfg.repetition_penalty
        if extra:
            common["extra_body"] = extra
        if cfg.chat:
            messages: Any = (
                [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            )
            resp = self.client.chat.completions.create(messages=messages, **common)
            texts = [(c.message.content or "", c.finish_reason) for c in resp.choices]
        else:
            if not isinstance(prompt, str):
                raise ValueError("raw continuation (`chat: false`) takes text prompts")
            resp = self.client.completions.create(prompt=prompt, **common)
            texts = [(c.text or "", c.finish_reason) for c in resp.choices]
        used = resp.usage.completion_tokens if resp.usage is not None else 0
        prompt_used = resp.usage.prompt_tokens if resp.usage is not None else 0
        out = []
        for text, reason in texts:
            cut, stopped = cut_at_stop(text, cfg.stop)
            finish = "length" if reason == "length" and not stopped else "stop"
            out.append(
                Generation(
                    cut.strip(), used // max(1, len(texts)), finish, prompt_tokens=prompt_used
                )
            )
        return out
