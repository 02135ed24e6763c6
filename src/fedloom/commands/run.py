"""`fedloom run CONFIG [--set k=v] [--out DIR] [--engine inprocess|flower-sim]`, or `--resume DIR`."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from fedloom.commands.common import add_out, add_set

HELP = "run a federated fine-tuning job from a YAML config"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML run config (see configs/)")
    p.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="continue an interrupted run from DIR/checkpoint.pt (its config.yaml is used)",
    )
    add_set(p)
    add_out(p, "output folder (default runs/<config>-<time>)")
    p.add_argument(
        "--engine",
        choices=["inprocess", "flower-sim"],
        default="inprocess",
        help="inprocess (default) or Flower's Simulation Runtime (Ray actors as SuperNodes)",
    )


def main(args: argparse.Namespace) -> int:
    from fedloom.config import load_config
    from fedloom.errors import CheckpointError, FedloomError

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
