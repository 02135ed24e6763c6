"""`fedloom eval --suite S [--model M] [--adapter DIR] [--config RUN.yaml] [--out FILE]`: offline suites, and a run's own held-out metrics."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

HELP = "evaluate a model (+ adapter) on offline benchmark suites"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="model name, HF folder or .gguf (default: --config's model, else "
        "smollm2-135m-instruct)",
    )
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder (e.g. runs/demo/adapter)")
    p.add_argument(
        "--suite",
        action="append",
        required=True,
        help="suite (repeatable): mmlu, medqa, medmcqa, gsm8k, math500, mmath-LANG, advbench, "
        "harmbench, donotanswer, mtbench, rouge-alpaca, rouge-gsm8k, rouge-medmcqa, heldout",
    )
    p.add_argument("--limit", type=int, default=None, help="fixed-seed random subset of N items")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--batch-size", type=int, default=None, help="default: --config's eval.batch_size, else 8"
    )
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--mc-mode", choices=["letter", "cloze"], default="letter")
    p.add_argument("--judge", default="rules", help="refusal judge for safety suites")
    p.add_argument(
        "--judge-model",
        default=None,
        help="scores mtbench: a local model (e.g. qwen2.5-coder-1.5b-instruct), or with "
        "--judge-url the served model's name; none: mtbench answers saved unscored",
    )
    p.add_argument(
        "--judge-url",
        default=None,
        help="an OpenAI-compatible endpoint for the mtbench judge, e.g. http://127.0.0.1:8000/v1 "
        "(vLLM); its key, if any, in OPENAI_API_KEY",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=["auto", "bf16", "fp32"],
        help="default: --config's model.precision, else auto",
    )
    p.add_argument("--out", default=None, help="JSON file for metrics and the items used")
    p.add_argument(
        "--config",
        default=None,
        help="the run config of the adapter: its held-out split is what `heldout` and "
        "`preference` score, and its model settings (name, precision, seed) and "
        "eval.batch_size are the defaults, so the figures match the run's own",
    )


def main(args: argparse.Namespace) -> int:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from fedloom.eval import SUITES, EvalContext, run_suite
    from fedloom.models import load_model
    from fedloom.settings import ModelConfig
    from fedloom.tasks import TASKS

    config_suites = sorted(t.heldout_suite for t in TASKS.values())
    unknown = [s for s in args.suite if s not in SUITES and s not in config_suites]
    if unknown:
        print(
            f"fedloom: unknown suite(s) {unknown}; choose from {sorted(SUITES) + config_suites}",
            file=sys.stderr,
        )
        return 2
    for needs_cfg in config_suites:
        if needs_cfg in args.suite and not args.config:
            print(
                f"fedloom: suite `{needs_cfg}` needs --config RUN.yaml (its data section defines "
                "the held-out split)",
                file=sys.stderr,
            )
            return 2
    if args.limit is not None and args.limit < 1:
        print("fedloom: --limit must be >= 1", file=sys.stderr)
        return 2
    if args.adapter and not (Path(args.adapter) / "adapter_config.json").is_file():
        what = (
            "does not exist" if not Path(args.adapter).exists() else "holds no adapter_config.json"
        )
        print(
            f"fedloom: --adapter {args.adapter} {what}; give a run's adapter folder "
            "(RUN_DIR/adapter, or RUN_DIR/adapters/client_K for `local`)",
            file=sys.stderr,
        )
        return 2
    from fedloom.config import load_config
    from fedloom.eval.suites import headline

    judge = _judge(args) if "mtbench" in args.suite else None
    if judge is not None:
        judge.preflight()  # before the model answers anything
    # with --config, the run's own model settings and batch size: the same figures as the run
    run_cfg = load_config(args.config) if args.config else None
    model_cfg = run_cfg.model if run_cfg is not None else ModelConfig("smollm2-135m-instruct")
    args.model = args.model or model_cfg.name
    args.precision = args.precision or (model_cfg.precision if run_cfg else "auto")
    args.batch_size = args.batch_size or (run_cfg.eval.batch_size if run_cfg else 8)
    if args.batch_size < 1:
        print("fedloom: --batch-size must be >= 1", file=sys.stderr)
        return 2
    loaded = load_model(dataclasses.replace(model_cfg, name=args.model, precision=args.precision))
    model: PreTrainedModel | PeftModel = loaded.model
    if args.adapter:
        model = PeftModel.from_pretrained(loaded.model, args.adapter)
    ctx = EvalContext(
        model,
        loaded.tokenizer,
        loaded.device,
        loaded.autocast_dtype,
        args.batch_size,
        args.max_new_tokens,
        args.mc_mode,
        args.judge,
    )
    report = {
        "model": args.model,
        "adapter": args.adapter,
        "limit": args.limit,
        "seed": args.seed,
        "suites": {},
    }
    print(f"{'suite':<13} {'n':>5}  {'metric':<12} {'value':>7}  95% CI            seconds")
    for name in args.suite:
        if name in config_suites:
            report["suites"][name] = _heldout(args, model, loaded, name)
            continue
        res = run_suite(name, ctx, args.limit, args.seed)
        key, value, ci = headline(res.metrics)
        print(f"{name:<13} {res.n:>5}  {key:<12} {value:>7.3f}  {ci:<16} {res.seconds:>7.1f}")
        if name == "mtbench" and judge is None:
            print(
                "  mtbench: answers to both turns saved (--out), not scored: no judge "
                "(pass --judge-model NAME, with --judge-url URL for a server)"
            )
        elif name == "mtbench" and judge is not None:
            res.metrics = _score_mtbench(args, judge, res.items)
        report["suites"][name] = {
            "n": res.n,
            "seconds": res.seconds,
            "metrics": res.metrics,
            "notes": res.notes,
            "items": res.items,
        }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


def _judge(args: argparse.Namespace) -> Any:
    """The MT-Bench judge the flags describe (None without --judge-model)."""
    from fedloom.generation import GeneratorConfig
    from fedloom.judges import JudgeConfig, JudgeModel
    from fedloom.settings import ConfigError

    if args.judge_model is None:
        if args.judge_url:
            raise ConfigError("--judge-url needs --judge-model (the served model's name)")
        return None
    backend = "openai" if args.judge_url else "local"
    gen = GeneratorConfig(backend=backend, model=args.judge_model, base_url=args.judge_url)
    return JudgeModel(JudgeConfig(generator=gen))


def _score_mtbench(args: argparse.Namespace, judge: Any, rows: list[Any]) -> dict[str, Any]:
    """MT-Bench answers scored by the judge (its jobs beside --out, resumable), printed with
    the judge's parse rate and validity."""
    import tempfile

    from fedloom.judges.mtbench import score_mtbench
    from fedloom.judges.validate import validity_note

    folder = Path(args.out).with_suffix(".judge") if args.out else Path(tempfile.mkdtemp())
    metrics, _ = score_mtbench(judge, rows, folder, progress=False)
    score = (
        "— (no turn judged)"
        if metrics["score"] is None
        else f"{metrics['score']:.2f} [{metrics['ci95_low']:.2f}, {metrics['ci95_high']:.2f}]"
    )
    print(
        f"  mtbench score {score} over {2 * len(rows) - metrics['unjudged_turns']} judged turns "
        f"({metrics['unjudged_turns']} unjudged; parse rate {metrics['parse_rate']:.0%})"
    )
    print(f"  {validity_note(judge.label, 'single')}")
    return dict(metrics)


def _heldout(args: argparse.Namespace, model: Any, loaded: Any, suite: str) -> dict[str, Any]:
    """On the held-out split of a run config's data, what the run itself reports, by the same
    evaluator (the task's, from the registry): ``heldout`` (SFT) loss and perplexity per
    domain; ``preference`` (DPO) preference accuracy, reward accuracy and margin, chosen
    log-likelihood and DPO loss (the config's data must hold pairs)."""
    import math

    from fedloom.config import load_config
    from fedloom.data import build_federated_data
    from fedloom.tasks import TASKS, EvalSetup

    cfg = load_config(args.config)
    task = next(t for t in TASKS.values() if t.heldout_suite == suite)
    tok = loaded.tokenizer
    data = build_federated_data(
        cfg.data, cfg.partition, tok, cfg.seed, pooled=True, convert=task.to_record
    )
    limit = args.limit or cfg.eval.max_examples
    setup = EvalSetup(
        model,
        data,
        int(tok.pad_token_id),
        loaded.device,
        loaded.autocast_dtype,
        limit,
        args.batch_size,
        cfg.train,
        tok,
    )
    evaluator = task.evaluator(setup)
    metrics = evaluator(base=args.adapter is None)
    if task.summary_key is not None:
        for k, v in metrics.items():
            if k != "all":
                print(f"{suite:<13} {len(data.heldout):>5}  {k:<15} {v:>8.4f}")
        return {"limit_per_domain": limit, "n": len(data.heldout), "metrics": metrics}
    for dom, loss in metrics.items():
        print(f"{suite:<10} {dom:>5}  {'loss':<14} {loss:>7.4f}  perplexity {math.exp(loss):.2f}")
    return {
        "limit_per_domain": limit,
        "loss": metrics,
        "perplexity": {k: math.exp(v) for k, v in metrics.items()},
    }
