"""In-process federated engine (the embedded default): every client runs in this process, one
after another, on one copy of the base model; only adapter tensors move between "client" and
"server" and their bytes are counted as if sent.

    fedloom run configs/tiny.yaml --out runs/tiny
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import PeftModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedloom.algorithms import ALGORITHMS, ClientUpdate, Strategy, build_strategy
from fedloom.algorithms.aggregate import add_scaled, subtract
from fedloom.algorithms.base import Broadcast
from fedloom.compression.codecs import Codec, NoCompression, get_codec
from fedloom.config import check_run_config
from fedloom.data import FederatedData, build_federated_data, summary_table
from fedloom.data.schema import Record, record_prompt
from fedloom.engine import outputs
from fedloom.engine.client_states import ClientStates, load_plain
from fedloom.engine.hooks import Turn, installed_turn
from fedloom.errors import CheckpointError, FedloomError
from fedloom.eval import EvalContext, generate_answers, run_suite
from fedloom.eval.suites import headline, source_key
from fedloom.models import attach_lora, get_adapter_state, load_model, set_adapter_state
from fedloom.models.card import write_cards
from fedloom.models.loader import LoadedModel, load_tokenizer
from fedloom.models.lora import load_adapter_folder
from fedloom.privacy import CentralDP, ClientDP, PrivacyBudgetSpent, update_norm
from fedloom.settings import ConfigError, RunConfig, packing_enabled
from fedloom.tasks import EvalSetup, Evaluator, get_task
from fedloom.tracking import Trackers
from fedloom.train import (
    LocalTrainer,
    adapter_parameters,
    cosine_lr,
    draw_examples,
    dynamic_steps,
)
from fedloom.utils import StateDict, rng_for, rss_gib, state_nbytes


@dataclass
class Federation:
    """Everything a run needs, built once from the config."""

    cfg: RunConfig
    loaded: LoadedModel
    model: PeftModel
    """The base model with the LoRA adapter attached (one copy, shared by all clients)."""
    data: FederatedData
    strategy: Strategy
    trainer: LocalTrainer
    evaluator: Evaluator
    """The task's held-out evaluator (loss per domain for SFT, preference metrics for DPO)."""
    codec: Codec = field(default_factory=NoCompression)
    """Encodes client uploads (`federation.compression`)."""
    client_states: MutableMapping[int, dict[str, Any]] = field(default_factory=dict)
    """Per-client algorithm state; `run` keeps it on disk (:class:`ClientStates`)."""
    client_dp: ClientDP | None = None
    """DP-SGD for local training (`privacy.client_dp`)."""

    @classmethod
    def build(
        cls, cfg: RunConfig, console: Console | None = None, only_client: int | None = None
    ) -> Federation:
        """``only_client``: hold only that client's shard (a deployed client process)."""
        check_run_config(cfg)  # a config built in code gets the loader's registry checks
        # data first: a data error costs seconds, not a model load
        tokenizer = load_tokenizer(cfg.model.name)
        pooled = ALGORITHMS[cfg.federation.algorithm].pooled_data
        data = build_federated_data(
            cfg.data,
            cfg.partition,
            tokenizer,
            cfg.seed,
            pooled=pooled,
            convert=get_task(cfg.task).to_record,
            only_client=only_client,
            safety=cfg.safety,
        )
        loaded = load_model(cfg.model, tokenizer)
        model = attach_lora(loaded.model, cfg.lora, seed=cfg.seed)
        if cfg.lora.init_from is not None:
            load_adapter_folder(model, cfg.lora.init_from)
        if console is not None:
            summary_table(data, cfg.partition.key, console)
        fc = cfg.federation
        strategy = build_strategy(
            fc.algorithm, fc.params, len(data.clients), fc.reducer, fc.reducer_params, cfg.seed
        )
        if cfg.privacy.central_dp is not None:
            strategy = CentralDP(
                strategy, cfg.privacy.central_dp, fc.rounds, fc.sample_clients, cfg.seed
            )
        strategy.initialize(get_adapter_state(model))
        pad = int(loaded.tokenizer.pad_token_id)
        task = get_task(cfg.task)
        # `packing: auto` resolved here: the objective packs only where it is exact
        packed = replace(cfg.train, packing="on" if packing_enabled(cfg) else "off")
        trainer = LocalTrainer(
            model, cfg.train, pad, loaded.device, loaded.autocast_dtype, task.objective(packed)
        )
        evaluator = task.evaluator(
            EvalSetup(
                model,
                data,
                pad,
                loaded.device,
                loaded.autocast_dtype,
                cfg.eval.max_examples,
                cfg.eval.batch_size,
                cfg.train,
                loaded.tokenizer,
            )
        )
        codec = get_codec(fc.compression, fc.topk_fraction)
        dp = cfg.privacy.client_dp
        client_dp = (
            ClientDP(dp, fc.rounds, fc.sample_clients / len(data.clients), cfg.seed)
            if dp is not None
            else None
        )
        return cls(cfg, loaded, model, data, strategy, trainer, evaluator, codec, {}, client_dp)

    def fit_client(
        self, round_idx: int, cid: int, lr: float, bc: Broadcast | None = None
    ) -> ClientUpdate:
        """One client's round: receive (``bc``, by default the strategy's broadcast), draw a
        fresh sample, train, report. A Flower ClientApp calls this with the received message."""
        bc = bc if bc is not None else self.strategy.broadcast(cid)
        set_adapter_state(self.model, bc.adapter)
        shard = self.data.clients[cid]
        steps = self.local_steps(len(shard))
        state = self.client_states.get(cid, {})
        hooks = self.strategy.client_hooks(bc, state, adapter_parameters(self.model))
        dp_metrics: dict[str, float] = {}
        if self.client_dp is not None:  # DP-SGD samples its own batches from the whole shard
            res, dp_metrics, state = self.client_dp.train(
                self.trainer,
                [self.data.train[i] for i in shard],
                lr,
                hooks,
                steps,
                state,
                round_idx,
                cid,
            )
        else:
            n = steps * self.cfg.train.grad_accum * self.cfg.train.batch_size
            picked = draw_examples(shard, n, rng_for(self.cfg.seed, "examples", round_idx, cid))
            seed = rng_for(self.cfg.seed, "dropout", round_idx, cid).getrandbits(63)
            res = self.trainer.train(
                [self.data.train[i] for i in picked], lr, hooks, steps=steps, seed=seed
            )
        adapter = get_adapter_state(self.model)
        extras, state = self.strategy.client_finish(bc, state, adapter, steps, lr)
        # what travels: the adapter, or its update encoded by the configured codec
        sent = subtract(adapter, bc.adapter) if self.codec.sends_update else adapter
        payload, self.client_states[cid] = self.codec.encode(sent, state)
        metrics = {
            "loss": res.mean_loss,
            "seconds": res.seconds,
            "tokens": float(res.tokens),
            "bytes_down": float(_message_bytes(bc.adapter, bc.extras)),
            "bytes_up": float(_message_bytes(payload, extras)),
            "update_norm": update_norm(subtract(adapter, bc.adapter)),
            "steps": float(steps),
            **dp_metrics,
        }
        return ClientUpdate(cid, {}, len(shard), extras, metrics, payload)

    def local_steps(self, shard_size: int) -> int:
        """Optimizer steps for a client holding ``shard_size`` examples: `train.local_steps`
        (times the sampled clients for a pooled baseline, which stands in for all of them), or
        FedLLM-Bench's dynamic steps (:func:`dynamic_steps`; the pooled baseline and the local
        baseline's clients join every round: their epochs spread over every round)."""
        t, fc = self.cfg.train, self.cfg.federation
        if t.local_steps == "dynamic":
            always = self.strategy.pooled_data or self.strategy.every_round
            k = 1 if always else len(self.data.clients)
            s = 1 if always else fc.sample_clients
            return dynamic_steps(
                max(shard_size, 1), fc.rounds, s, k, t.batch_size, t.grad_accum, t.epochs
            )
        return t.fixed_steps * (fc.sample_clients if self.strategy.pooled_data else 1)

    def warm_up(self, cid: int) -> float:
        """Two training steps on client ``cid``'s examples, undone: a process that is to
        train a client grows its memory and runs its kernels before the first round, not in it
        (:meth:`LocalTrainer.warm_up`). Returns the seconds it took."""
        return self.trainer.warm_up([self.data.train[i] for i in self.data.clients[cid]])

    def receive(self, update: ClientUpdate) -> ClientUpdate:
        """Server side: decode an update's payload into the client's adapter (the codec's
        update added to the adapter this client was sent)."""
        sent = self.strategy.broadcast(update.client_id).adapter
        decoded = self.codec.decode(update.payload, sent)
        update.adapter = add_scaled(sent, decoded, 1.0) if self.codec.sends_update else decoded
        return update

    def benchmarks(self, base: bool = False) -> dict[str, dict[str, Any]]:
        """Score ``eval.suites`` on the loaded adapter (or the base model, adapter disabled)."""
        e = self.cfg.eval
        ctx = EvalContext(
            self.model,
            self.loaded.tokenizer,
            self.loaded.device,
            self.loaded.autocast_dtype,
            e.batch_size,
            progress=False,
        )
        out = {}
        # no evaluation on training items: a suite built from a source this run trains on
        # (the `gsm8k` source is the GSM8K test set) leaves those items out
        trained = {source_key(r) for r in self.data.train_records}
        with self.model.disable_adapter() if base else contextlib.nullcontext():
            for name in e.suites:
                res = run_suite(name, ctx, e.suite_limit, self.cfg.seed, exclude=trained)
                out[name] = {
                    "n": res.n,
                    "metrics": res.metrics,
                    "items": [r["id"] for r in res.items],
                    "excluded_training_items": res.excluded,
                }
        return out

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Held-out loss of every adapter the strategy exposes (the global one, or per client)."""
        out = {}
        for name, adapter in self.strategy.eval_targets().items():
            set_adapter_state(self.model, adapter)
            out[name] = self.evaluator()
        return out


class ClientRunner(Protocol):
    """Runs a round's sampled clients: in this process, or on Flower SuperNodes."""

    def fit(
        self, round_idx: int, cids: list[int], lr: float, done: Callable[[], None]
    ) -> tuple[list[ClientUpdate], dict[int, str]]:
        """Updates of the clients that replied, and ``{client: reason}`` for those that failed."""
        ...


@dataclass
class InProcessClients:
    fed: Federation

    def fit(
        self, round_idx: int, cids: list[int], lr: float, done: Callable[[], None]
    ) -> tuple[list[ClientUpdate], dict[int, str]]:
        updates, failed = [], {}
        for cid in cids:
            try:
                updates.append(self.fed.receive(self.fed.fit_client(round_idx, cid, lr)))
            except PrivacyBudgetSpent as e:  # a client's refusal, as a remote one would reply
                failed[cid] = str(e)
            done()
        return updates, failed


class RoundFailed(FedloomError, RuntimeError):
    """Too few clients replied to a round, even after the retries."""


def _mean_eval(evals: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = next(iter(evals.values())).keys()
    return {k: sum(e[k] for e in evals.values()) / len(evals) for k in keys}


@dataclass
class _Run:
    """What a run carries from its start to its finish."""

    cfg: RunConfig
    out: Path
    fed: Federation
    runner: ClientRunner
    sampler: random.Random
    history: list[dict[str, Any]]
    baseline: dict[str, Any]
    samples: list[Record]
    privacy: _PrivacyLedger
    console: Console
    t_start: float
    trackers: Trackers


def run(
    cfg: RunConfig,
    out_dir: str | Path,
    console: Console | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    federation: Federation | None = None,
    resume: bool = False,
    clients: ClientRunner | None = None,
    turn: Turn | None = None,
) -> dict[str, Any]:
    """Run a federated fine-tuning job; write config, metrics, summary, adapter and plot to out_dir.

    After every round the server state (strategy state, client states, sampling RNG, metrics
    so far) is checkpointed atomically to ``out_dir/checkpoint.pt``; ``resume`` continues from
    it and ends with the same adapter as an uninterrupted run. ``federation`` may be passed
    pre-built (from the same ``cfg``); after the run it holds the final strategy state.
    ``clients`` runs the sampled clients (default: in this process; Flower's runner sends them
    to SuperNodes, where a client may fail: see ``federation.min_clients``). ``turn`` wraps
    each part that uses the machine (a hook, :mod:`fedloom.engine.hooks`; default: the one
    ``FEDLOOM_RUN_HOOK`` installs, else none).
    """
    turn = turn or installed_turn()
    r = _start(cfg, Path(out_dir), console or Console(), federation, resume, clients, turn)
    with (r.out / "metrics.jsonl").open("w") as log, _progress(r.console) as progress:
        for past in r.history:  # the rounds a resumed run already has
            log.write(json.dumps(past) + "\n")
        bar = progress.add_task("rounds", total=cfg.federation.rounds, completed=len(r.history))
        for rnd in range(len(r.history), cfg.federation.rounds):
            with turn():  # the timed part of the round, in turn with other runs
                row = _round(r, rnd, progress)
                if row is None:  # every client has spent its privacy budget
                    break
                r.history.append(row)
                _save_checkpoint(r.out, rnd + 1, r.fed, r.sampler, r.history, r.baseline)
            log.write(json.dumps(row) + "\n")
            log.flush()
            r.trackers.log_round(row)
            if on_round:
                on_round(row)
            progress.advance(bar)
            r.console.print(_round_line(row))
    with turn():
        return _finish(r)


def _start(
    cfg: RunConfig,
    out: Path,
    console: Console,
    federation: Federation | None,
    resume: bool,
    clients: ClientRunner | None,
    turn: Turn,
) -> _Run:
    """Build (or take) the federation; fresh: save the config and score the base model;
    resumed: restore strategy, client states, sampling RNG and the rounds so far."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt = _load_checkpoint(out) if resume else None
    trackers = Trackers(cfg.logging, out, cfg.tracking)  # a missing package: before any work
    if ckpt is None:
        cfg.save(out / "config.yaml")
    t_start = time.perf_counter()
    if federation is None:  # a pre-built one took its turn where it was built
        with turn():
            federation = Federation.build(cfg, console)
    fed = federation
    if clients is None and cfg.privacy.secagg is not None:
        raise ConfigError(
            "`privacy.secagg` runs on the Flower engines (`fedloom run --engine flower-sim`, or "
            "`fedloom server` + `fedloom client`): in one process there is nothing to hide"
        )
    samples = _sample_records(fed.data, cfg.eval.sample_prompts)
    sampler = rng_for(cfg.seed, "client-sampling")
    index = ckpt["client_states"] if ckpt is not None else None
    if ckpt is None and cfg.federation.continue_from is not None:
        index = _continue_from(Path(cfg.federation.continue_from), out, fed, sampler, console)
    fed.client_states = ClientStates(out / "client_states", index)
    fed.client_states.collect()  # drop files of a round that was cut short
    history: list[dict[str, Any]] = []
    if ckpt is None:
        with turn():
            baseline = _baseline(fed, samples, console)
    else:
        fed.strategy.load_state_dict(ckpt["strategy"])
        sampler.setstate(ckpt["sampler"])
        history, baseline = ckpt["history"], ckpt["baseline"]
        console.print(f"resuming {out} after round {ckpt['round']} of {cfg.federation.rounds}")
    runner = clients or InProcessClients(fed)
    privacy = _PrivacyLedger.from_history(history)
    # named by the run folder and its parent: a pipeline's stage runs are all called `run`
    trackers.start("/".join(out.resolve().parts[-2:]), cfg.to_dict())
    return _Run(
        cfg, out, fed, runner, sampler, history, baseline, samples, privacy, console, t_start,
        trackers,
    )  # fmt: skip


def _round(r: _Run, rnd: int, progress: Progress) -> dict[str, Any] | None:
    """One round: sample, train the clients, aggregate, record privacy, evaluate."""
    cfg, fed, fc = r.cfg, r.fed, r.cfg.federation
    t0 = time.perf_counter()
    g = rnd + fc.round_offset  # the round in the whole schedule (a continued run's later phase)
    lr = cosine_lr(g, fc.lr_rounds, cfg.train.lr, cfg.train.min_lr)
    sampled = fed.strategy.sample(r.sampler, fc.sample_clients, exclude=r.privacy.retired)
    if not sampled:
        r.console.print(
            f"[yellow]every client has spent its privacy budget: the run stops after round "
            f"{rnd} of {fc.rounds}[/yellow]"
        )
        return None
    bar = progress.add_task(f"round {rnd + 1} clients", total=len(sampled))
    updates, failed = _fit_round(r.runner, g, sampled, lr, fc, r.console, progress, bar)
    progress.remove_task(bar)
    fed.strategy.aggregate(g, updates)
    row = outputs.round_row(rnd, cfg.task, fc.algorithm, sampled, lr, updates, failed)
    row |= r.privacy.record(updates, fed.strategy, r.console)
    row["aggregation"] = dict(getattr(fed.strategy, "last_aggregation", {})) or None
    if cfg.eval.every and ((rnd + 1) % cfg.eval.every == 0 or rnd + 1 == fc.rounds):
        evals = fed.evaluate()
        mean = _mean_eval(evals)
        row[get_task(cfg.task).metrics_key] = mean
        row["eval_loss"] = mean["all"]
        if len(evals) > 1:
            row["eval_loss_by_client"] = {k: v["all"] for k, v in evals.items()}
        if cfg.eval.suites and rnd + 1 < fc.rounds:  # the last round's: after the loop
            set_adapter_state(fed.model, next(iter(fed.strategy.eval_targets().values())))
            row["benchmarks"] = {k: b["metrics"] for k, b in fed.benchmarks().items()}
    row["seconds"] = time.perf_counter() - t0
    row |= rss_gib()  # this process's memory after the round and its peak so far
    return row


def _finish(r: _Run) -> dict[str, Any]:
    """Final evaluation, adapters, summary.json and the loss plot."""
    cfg, fed, history = r.cfg, r.fed, r.history
    final_evals = fed.evaluate()
    final = _mean_eval(final_evals)
    _save_adapters(fed, r.out)
    # benchmarks and samples use the global adapter (for `local`: client 0's)
    set_adapter_state(fed.model, next(iter(fed.strategy.eval_targets().values())))
    bench_after = fed.benchmarks()
    prompts = [record_prompt(s) for s in r.samples]
    after = (
        generate_answers(
            fed.model, fed.loaded.tokenizer, prompts, fed.loaded.device, cfg.eval.max_new_tokens
        )
        if prompts
        else []
    )
    base_eval, bench_before = r.baseline["eval"], r.baseline["benchmarks"]
    last = history[-1] if history else {}
    dp_keys = ("epsilon_by_client", "epsilon_max", "retired_clients", "central_dp")
    summary = outputs.empty_summary() | {
        "task": cfg.task,
        "algorithm": cfg.federation.algorithm,
        "model": cfg.model.name,
        "rounds": cfg.federation.rounds,
        "rounds_completed": len(history),
        "num_clients": len(fed.data.clients),
        "client_sizes": fed.data.client_sizes(),
        "malicious_clients": fed.data.malicious or None,
        "precision": str(fed.loaded.autocast_dtype or "fp32").replace("torch.", ""),
        "packing": packing_enabled(cfg),
        "device": str(fed.loaded.device),
        **get_task(cfg.task).summary_fields(base_eval, final),
        "final_eval_loss_by_client": {k: v["all"] for k, v in final_evals.items()}
        if len(final_evals) > 1
        else None,
        "bytes_up_total": sum(row["bytes_up"] for row in history),
        "bytes_down_total": sum(row["bytes_down"] for row in history),
        "train_seconds": sum(row["seconds"] for row in history),
        "wall_seconds": time.perf_counter() - r.t_start,
        "peak_rss_gib": rss_gib()["peak_rss_gib"],
        "benchmarks": {
            name: {
                "n": b["n"],
                "excluded_training_items": b.get("excluded_training_items", 0),
                "base": b["metrics"],
                "final": bench_after[name]["metrics"],
                "items": b["items"],
            }
            for name, b in bench_before.items()
        },
        "samples": [
            {"prompt": p, "domain": s.metadata.get("domain"), "base": b, "final": a}
            for p, s, b, a in zip(prompts, r.samples, r.baseline["answers"], after, strict=True)
        ],
        "privacy": {k: last[k] for k in dp_keys}
        if last.get("epsilon_by_client") or last.get("central_dp")
        else None,
    }
    (r.out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_cards(r.out, cfg.to_dict(), summary)  # portable adapter_config.json, model cards
    _plot(history, base_eval, r.out / "plots" / "loss.png", cfg.federation.algorithm)
    r.trackers.finish(summary)
    return summary


@dataclass
class _PrivacyLedger:
    """What the server learns of privacy spending, round by round: each client's ε (reported
    by its DP-SGD accountant), the clients whose budget is spent (never sampled again), and the
    central-DP wrapper's ε and clipping figures."""

    epsilon: dict[str, float] = field(default_factory=dict)
    retired: set[int] = field(default_factory=set)

    @classmethod
    def from_history(cls, history: list[dict[str, Any]]) -> _PrivacyLedger:
        last = history[-1] if history else {}
        return cls(
            dict(last.get("epsilon_by_client") or {}), set(last.get("retired_clients") or [])
        )

    def record(
        self, updates: list[ClientUpdate], strategy: Strategy, console: Console
    ) -> dict[str, Any]:
        row: dict[str, Any] = {}
        this_round = {
            str(u.client_id): u.metrics["epsilon"] for u in updates if "epsilon" in u.metrics
        }
        if this_round:
            self.epsilon |= this_round
            row["epsilon"] = this_round
            row["epsilon_by_client"] = dict(sorted(self.epsilon.items(), key=lambda kv: int(kv[0])))
            row["epsilon_max"] = max(self.epsilon.values())
            for u in updates:
                if u.metrics.get("dp_exhausted") and u.client_id not in self.retired:
                    self.retired.add(u.client_id)
                    console.print(
                        f"[yellow]client {u.client_id} has spent its privacy budget "
                        f"(ε = {u.metrics['epsilon']:.3f}): it takes no further part[/yellow]"
                    )
            row["retired_clients"] = sorted(self.retired)
        if isinstance(strategy, CentralDP):
            row["central_dp"] = dict(strategy.last)
        return row


def _fit_round(
    runner: ClientRunner,
    rnd: int,
    sampled: list[int],
    lr: float,
    fc: Any,
    console: Console,
    progress: Progress,
    task: Any,
) -> tuple[list[ClientUpdate], dict[int, str]]:
    """Run the sampled clients; a round with fewer than ``min_clients`` replies is retried
    (``round_retries`` times) and then stops the run with the failures named."""
    failed_all: dict[int, str] = {}
    for attempt in range(fc.round_retries + 1):
        updates, failed = runner.fit(rnd, sampled, lr, lambda: progress.advance(task))
        failed_all |= {c: f"attempt {attempt + 1}: {why}" for c, why in failed.items()}
        for c, why in failed.items():
            console.print(f"[yellow]round {rnd + 1}: client {c} failed ({why})[/yellow]")
        if len(updates) >= fc.min_clients:
            return updates, failed_all
    raise RoundFailed(
        f"round {rnd + 1}: only {len(updates)} of {len(sampled)} clients replied "
        f"(federation.min_clients = {fc.min_clients}) after {fc.round_retries + 1} attempt(s); "
        f"failures: {failed_all}. The last completed round is checkpointed: fix the clients "
        "and continue with `fedloom run --resume DIR`."
    )


def _baseline(fed: Federation, samples: list[Record], console: Console) -> dict[str, Any]:
    """The base model (adapter disabled): held-out evaluation, suites, sample answers."""
    base_eval = fed.evaluator(base=True)
    what = get_task(fed.cfg.task).heldout_what
    shown = {k: round(v, 4) for k, v in base_eval.items()}
    console.print(f"base model held-out {what}: {shown}", markup=False)  # keys like accuracy[STEM]
    answers = (
        generate_answers(
            fed.model,
            fed.loaded.tokenizer,
            [record_prompt(r) for r in samples],
            fed.loaded.device,
            fed.cfg.eval.max_new_tokens,
            base=True,
        )
        if samples
        else []
    )
    bench = fed.benchmarks(base=True)
    for name, b in bench.items():
        console.print(f"base model {name}: {_headline(b['metrics'])} (n={b['n']})")
    return {"eval": base_eval, "benchmarks": bench, "answers": answers}


CHECKPOINT = "checkpoint.pt"


def _continue_from(
    prev: Path, out: Path, fed: Federation, sampler: random.Random, console: Console
) -> dict[int, str]:
    """Start from the final state of the run in ``prev`` (``federation.continue_from``): its
    server state and sampling RNG, and a copy of its clients' state files (returns their
    index)."""
    ckpt = _load_checkpoint(prev)
    fed.strategy.load_state_dict(ckpt["strategy"])
    sampler.setstate(ckpt["sampler"])
    index: dict[int, str] = dict(ckpt["client_states"])
    (out / "client_states").mkdir(parents=True, exist_ok=True)
    for name in index.values():
        shutil.copy2(prev / "client_states" / name, out / "client_states" / name)
    console.print(f"continuing {prev} (after its round {ckpt['round']}) in {out}")
    return index


def _save_checkpoint(
    out: Path,
    done_rounds: int,
    fed: Federation,
    sampler: random.Random,
    history: list[dict[str, Any]],
    baseline: dict[str, Any],
) -> None:
    """Write then rename: a kill at any moment leaves the previous checkpoint or the new one."""
    state = {
        "round": done_rounds,
        "strategy": fed.strategy.state_dict(),
        "client_states": fed.client_states.index()
        if isinstance(fed.client_states, ClientStates)
        else dict(fed.client_states),
        "sampler": sampler.getstate(),
        "history": history,
        "baseline": baseline,
    }
    tmp = out / (CHECKPOINT + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / CHECKPOINT)
    if isinstance(fed.client_states, ClientStates):
        fed.client_states.collect()


def _load_checkpoint(out: Path) -> dict[str, Any]:
    """The checkpoint, loaded with ``weights_only=True``: tensors, numbers, strings, lists,
    tuples and dicts only. A file holding any other pickled object is refused, never run (a
    tampered run folder must not execute code on ``--resume``)."""
    path = out / CHECKPOINT
    if not path.exists():
        raise CheckpointError(
            f"no {CHECKPOINT} in {out}: nothing to resume (a run writes one after each round)"
        )
    return load_plain(path, "checkpoint")


def _headline(metrics: dict[str, float]) -> str:
    key, value, ci = headline(metrics)
    return f"{key} {value:.3f} {ci}"


def _message_bytes(adapter: StateDict, extras: dict[str, StateDict]) -> int:
    """Bytes of one message: the adapter tensors plus any extra tensors (SCAFFOLD controls)."""
    return state_nbytes(adapter) + sum(state_nbytes(e) for e in extras.values())


def _sample_records(data: FederatedData, n: int) -> list[Record]:
    """n held-out records, cycling through domains so each domain is shown."""
    groups = list(data.heldout_by_domain().values())
    picked = []
    for i in range(n):
        g = groups[i % len(groups)]
        if i // len(groups) < len(g):
            picked.append(data.heldout_records[g[i // len(groups)]])
    return picked


def _save_adapters(fed: Federation, out: Path) -> None:
    """PEFT format: ``PeftModel.from_pretrained(base, out/"adapter")`` loads it."""
    targets = fed.strategy.eval_targets()
    for name, adapter in targets.items():
        set_adapter_state(fed.model, adapter)
        fed.model.save_pretrained(
            str(out / "adapter" if len(targets) == 1 else out / "adapters" / name)
        )


def _round_line(row: dict[str, Any]) -> str:
    ev = f"  eval {row['eval_loss']:.4f}" if row.get("eval_loss") is not None else ""
    if row.get("epsilon_max") is not None:
        ev += f"  ε≤{row['epsilon_max']:.2f}"
    if row.get("central_dp"):
        ev += f"  central ε {row['central_dp']['epsilon']:.2f}"
    for name, m in row.get("benchmarks", {}).items():
        ev += f"  {name} {_headline(m)}"
    return (
        f"round {row['round']:>3}  clients {row['clients']}  lr {row['lr']:.2e}  "
        f"train {row['train_loss']:.4f}{ev}  ↑{row['bytes_up'] / 1e6:.2f} MB ↓{row['bytes_down'] / 1e6:.2f} MB  "
        f"{row['seconds']:.1f}s"
    )


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _plot(history: list[dict[str, Any]], base: dict[str, float], path: Path, algo: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [r["round"] for r in history],
        [r["train_loss"] for r in history],
        "o-",
        label="train loss (sampled clients)",
    )
    ev = [r for r in history if r.get("eval_loss") is not None]
    ax.plot(
        [0] + [r["round"] for r in ev],
        [base["all"]] + [r["eval_loss"] for r in ev],
        "s-",
        label="held-out loss",
    )
    ax.set_xlabel("round")
    ax.set_ylabel("loss (per response token)")
    ax.set_title(f"fedloom · {algo}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
