"""Per-item evaluation of a model (the base, or the base + a LoRA adapter), cached by content.

Every pipeline scores its arms on the same items and compares them item by item
(:func:`fedloom.experiment.compare`), so the unit here is a per-item record: held-out loss per
example, or a suite item's correct / refused. A score is cached under the pipeline's folder by
the content hash of (model settings, adapter weights, items, scoring settings): the base model
is scored once per pipeline, however many arms and stages compare against it.

    scorer = Scorer(cfg.train.model, cache=ctx.out / "cache")
    base = scorer.heldout(None, records, max_seq_len=512)
    tuned = scorer.heldout(adapter_dir, records, max_seq_len=512)
    compare({seed: tuned.values}, {seed: base.values}, lower_is_better=True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedloom.data.schema import InstructionRecord
from fedloom.errors import FedloomError
from fedloom.settings import ModelConfig


class EvaluationError(FedloomError, ValueError):
    """Items cannot be scored (none left after tokenization, an adapter folder is missing)."""


@dataclass
class ItemScores:
    """One model's per-item values on one item set."""

    metric: str
    lower_is_better: bool
    values: dict[str, float]
    """Item id -> value (loss per response token; 1.0 / 0.0 for correct / refused)."""
    dropped: int = 0
    """Items that could not be scored (too long for the sequence length), counted."""
    seconds: float = 0.0
    cached: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values.values()) / len(self.values) if self.values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"n": self.n, "mean": self.mean}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ItemScores:
        d = json.loads(path.read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def item_id(*texts: str) -> str:
    """A stable id for an item from its text (the same item gets the same id in every arm)."""
    h = hashlib.sha1("\x1f".join(texts).encode("utf-8")).hexdigest()
    return h[:16]


def record_id(r: InstructionRecord) -> str:
    return item_id(r.instruction, r.input, r.response)


def adapter_digest(adapter: Path | None) -> str:
    """sha256 of an adapter's weights ("base" for no adapter)."""
    if adapter is None:
        return "base"
    files = sorted(Path(adapter).glob("adapter_model.*"))
    if not files:
        raise EvaluationError(
            f"no adapter weights in {adapter} (adapter_model.safetensors): did its training "
            "stage finish? delete the stage's folder to redo it"
        )
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def content_key(model: ModelConfig, adapter: Path | None, kind: str, payload: Any) -> str:
    blob = json.dumps(
        [dataclasses.asdict(model), adapter_digest(adapter), kind, payload],
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


@dataclass
class Scorer:
    """Scores items with one base model (loaded on the first cache miss) and any number of
    adapters on it."""

    model_cfg: ModelConfig
    cache: Path | None = None
    """Folder of cached scores (e.g. ``out/cache``); None: nothing cached."""
    batch_size: int = 8
    _loaded: Any = field(default=None, repr=False)
    _adapters: dict[str, str] = field(default_factory=dict, repr=False)

    # -- the model -------------------------------------------------------------------------

    @property
    def loaded(self) -> Any:
        if self._loaded is None:
            from fedloom.models import load_model

            self._loaded = load_model(self.model_cfg)
        return self._loaded

    @contextlib.contextmanager
    def model(self, adapter: Path | None) -> Iterator[Any]:
        """The model with ``adapter`` active (the base model for None), in eval mode."""
        from peft import PeftModel

        loaded = self.loaded
        if adapter is None:
            m = loaded.model
            with m.disable_adapter() if isinstance(m, PeftModel) else contextlib.nullcontext():
                m.eval()
                yield m
            return
        if not (Path(adapter) / "adapter_config.json").exists():
            raise EvaluationError(f"no adapter at {adapter} (adapter_config.json missing)")
        key = str(Path(adapter).resolve())
        if key not in self._adapters:
            name = f"a{len(self._adapters)}"
            if isinstance(loaded.model, PeftModel):
                loaded.model.load_adapter(key, adapter_name=name)
            else:
                loaded.model = PeftModel.from_pretrained(loaded.model, key, adapter_name=name)
            self._adapters[key] = name
        loaded.model.set_adapter(self._adapters[key])
        loaded.model.eval()
        yield loaded.model

    # -- cached scoring --------------------------------------------------------------------

    def _cached(self, key: str) -> ItemScores | None:
        if self.cache is None or not (self.cache / f"{key}.json").exists():
            return None
        s = ItemScores.load(self.cache / f"{key}.json")
        s.cached = True
        return s

    def _store(self, key: str, scores: ItemScores) -> ItemScores:
        if self.cache is not None:
            scores.save(self.cache / f"{key}.json")
        return scores

    def heldout(
        self,
        adapter: Path | None,
        records: Sequence[InstructionRecord],
        max_seq_len: int,
        ids: Sequence[str] | None = None,
    ) -> ItemScores:
        """Loss per response token of each record (the response given the prompt)."""
        ids = list(ids) if ids is not None else [record_id(r) for r in records]
        if len(ids) != len(records):
            raise EvaluationError(f"{len(ids)} ids for {len(records)} held-out items")
        if len(set(ids)) != len(ids):
            raise EvaluationError("held-out items repeat (two records with the same id)")
        payload = {
            "max_seq_len": max_seq_len,
            "items": [
                [i, r.instruction, r.input, r.response] for i, r in zip(ids, records, strict=True)
            ],
        }
        key = content_key(self.model_cfg, adapter, "heldout-loss", payload)
        if (hit := self._cached(key)) is not None:
            return hit
        from fedloom.data.template import tokenize_example
        from fedloom.eval.heldout import example_losses

        t0 = time.perf_counter()
        loaded = self.loaded
        toks = [tokenize_example(loaded.tokenizer, r, max_seq_len) for r in records]
        kept = [(i, t) for i, t in zip(ids, toks, strict=True) if t is not None]
        if not kept:
            raise EvaluationError(
                f"none of {len(records)} held-out items fits `data.max_seq_len` {max_seq_len}"
            )
        with self.model(adapter) as m:
            losses = example_losses(
                m,
                [t for _, t in kept],
                int(loaded.tokenizer.pad_token_id),
                loaded.device,
                loaded.autocast_dtype,
                self.batch_size,
            )
        values = {i: float(v) for (i, _), v in zip(kept, losses, strict=True)}
        scores = ItemScores(
            "loss", True, values, len(records) - len(kept), time.perf_counter() - t0
        )
        return self._store(key, scores)

    def classify(self, adapter: Path | None, records: Sequence[InstructionRecord]) -> ItemScores:
        """Per record, 1.0 when the most likely label (``task: classify``'s rule: the label's
        whole answer by log-likelihood) is its own label."""
        from fedloom.tasks.classify import predict_label

        ids = [record_id(r) for r in records]
        payload = [[i, r.instruction, r.metadata["label"], list(r.metadata["labels"])]
                   for i, r in zip(ids, records, strict=True)]  # fmt: skip
        key = content_key(self.model_cfg, adapter, "classify", payload)
        if (hit := self._cached(key)) is not None:
            return hit
        import torch

        t0 = time.perf_counter()
        loaded = self.loaded
        with self.model(adapter) as m, torch.no_grad():
            values = {
                i: float(
                    predict_label(m, loaded.tokenizer, r, loaded.device, loaded.autocast_dtype)
                    == str(r.metadata["label"])
                )
                for i, r in zip(ids, records, strict=True)
            }
        scores = ItemScores("accuracy", False, values, 0, time.perf_counter() - t0)
        return self._store(key, scores)

    def suite(
        self,
        adapter: Path | None,
        name: str,
        limit: int | None,
        seed: int,
        exclude: Collection[tuple[str, str]] = frozenset(),
        **settings: Any,
    ) -> tuple[ItemScores, dict[str, Any]]:
        """A suite's per-item values (correct for multiple choice and math, refused for the
        safety suites) and its metrics."""
        payload = {
            "suite": name,
            "limit": limit,
            "seed": seed,
            "exclude": sorted(map(list, exclude)),
            "settings": settings,
        }
        key = content_key(self.model_cfg, adapter, "suite", payload)
        if (hit := self._cached(key)) is not None:
            meta = json.loads((self.cache / f"{key}.meta.json").read_text())  # type: ignore[operator]
            return hit, meta
        import torch

        from fedloom.eval.suites import EvalContext, run_suite

        t0 = time.perf_counter()
        loaded = self.loaded
        with self.model(adapter) as m, torch.no_grad():
            ectx = EvalContext(m, loaded.tokenizer, loaded.device, loaded.autocast_dtype)
            ectx = dataclasses.replace(ectx, progress=False, **settings)
            r = run_suite(name, ectx, limit, seed, exclude)
        metric = next((k for k in ("correct", "refused") if r.items and k in r.items[0]), None)
        values = {str(it["id"]): float(bool(it[metric])) for it in r.items} if metric else {}
        scores = ItemScores(metric or "none", False, values, 0, time.perf_counter() - t0)
        meta = {"metrics": r.metrics, "n": r.n, "excluded": r.excluded, "items": r.items}
        if self.cache is not None:
            self.cache.mkdir(parents=True, exist_ok=True)
            (self.cache / f"{key}.meta.json").write_text(json.dumps(meta, ensure_ascii=False))
        return self._store(key, scores), meta


def heldout_vs_base(
    scorer: Scorer,
    adapter: Path,
    records: Sequence[InstructionRecord],
    max_seq_len: int,
    folder: Path,
    name: str,
    seed: int,
) -> dict[str, Any]:
    """The evaluate stage kind for held-out loss: base and tuned scored per item (saved as
    ``folder/items/<name>.base.json`` and ``.tuned.json`` for the table), and this seed's paired
    comparison as the stage's summary."""
    from fedloom.experiment.compare import compare

    base = scorer.heldout(None, records, max_seq_len)
    tuned = scorer.heldout(adapter, records, max_seq_len)
    base.save(folder / "items" / f"{name}.base.json")
    tuned.save(folder / "items" / f"{name}.tuned.json")
    c = compare({seed: tuned.values}, {seed: base.values}, lower_is_better=True, seed=seed)
    improved = sum(tuned.values[i] < base.values[i] for i in tuned.values)
    return {
        "n": tuned.n,
        "dropped": tuned.dropped,
        "base": round(base.mean, 4),
        "tuned": round(tuned.mean, 4),
        "diff": round(c.diff, 4),
        "ci95": [round(c.low, 4), round(c.high, 4)],
        "verdict": c.verdict,
        "improved": round(improved / tuned.n, 4),
        "items_per_second": round(tuned.n / tuned.seconds, 2) if tuned.seconds else None,
    }


def suite_vs_base(
    scorer: Scorer,
    adapter: Path,
    suite: str,
    limit: int | None,
    seed: int,
    exclude: Collection[tuple[str, str]],
    folder: Path,
) -> dict[str, Any]:
    """The evaluate stage kind for a suite: base (cached once per pipeline) and tuned, per item
    (``folder/items/<suite>.base.json`` / ``.tuned.json``); their metrics as the summary."""
    res: dict[str, Any] = {}
    for which, a in (("base", None), ("tuned", adapter)):
        scores, meta = scorer.suite(a, suite, limit, seed, exclude)
        scores.save(folder / "items" / f"{suite}.{which}.json")
        res[which] = meta["metrics"] | {"n": meta["n"], "excluded": meta["excluded"]}
        res[which]["cached"] = scores.cached
    return res
