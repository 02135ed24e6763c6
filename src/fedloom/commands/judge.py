"""`fedloom judge validate`: measure whether a judge can judge, on this machine, before its
scores are trusted (docs/evaluation.md, "Judges")."""

from __future__ import annotations

import argparse

from fedloom.commands.common import add_out

HELP = "validate an LLM judge: does it rank reference answers above corrupted ones, agree with human safety labels, parse"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    v = sub.add_parser("validate", help="measure a judge's validity (figures saved for tables)")
    v.add_argument(
        "--config",
        default=None,
        help="a YAML file holding a `judge:` section (a pipeline config works); default: the "
        "local Qwen2.5-Coder-1.5B-Instruct judge",
    )
    v.add_argument(
        "--kinds", nargs="+", default=None, help="judge kinds to validate (default: all)"
    )
    v.add_argument("--n", type=int, default=30, help="questions and pairs per validation set")
    v.add_argument("--seed", type=int, default=0)
    add_out(v, "output folder (default: out/judge-validate/<judge>); a rerun resumes it")
    v.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a judge setting, e.g. --set generator.model=qwen2.5-coder-0.5b-instruct, "
        "--set generator.backend=openai --set generator.base_url=http://127.0.0.1:8000/v1 "
        "(repeatable)",
    )


def main(args: argparse.Namespace) -> int:
    from pathlib import Path
    from typing import Any

    import yaml

    from fedloom.judges import JUDGE_KINDS, JudgeConfig, JudgeError, JudgeModel
    from fedloom.judges.validate import KINDS, judge_slug, validate, validity_note
    from fedloom.settings import ConfigError, apply_override, section_from_dict

    raw: Any = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        doc = yaml.safe_load(path.read_text()) or {}
        sections = [doc, *(v for v in doc.values() if isinstance(v, dict))]
        raw = next((sec["judge"] for sec in sections if sec.get("judge") is not None), None)
        if raw is None:
            raise ConfigError(f"--config {path}: no `judge:` section in it")
    data = {"judge": raw}
    for o in args.overrides:
        apply_override(data, o if o.startswith("judge.") else f"judge.{o}")
    cfg = section_from_dict(JudgeConfig, data["judge"] or {}, "judge")
    kinds = args.kinds or list(KINDS)
    unknown = [k for k in kinds if k not in JUDGE_KINDS]
    if unknown:
        raise JudgeError(
            f"--kinds: unknown judge {unknown[0]!r}; choose from {sorted(JUDGE_KINDS)}"
        )
    if args.n < 5:
        raise ConfigError("--n must be >= 5 (the shares need items to mean anything)")
    model = JudgeModel(cfg)
    model.preflight()
    out = Path(args.out or f"out/judge-validate/{judge_slug(cfg.label())}")
    figures = validate(model, out, args.n, kinds, args.seed)
    print(f"\nvalidity of {cfg.label()} (n={args.n}, seed {args.seed}; {out}/validity.json):")
    for kind in figures["kinds"]:
        print("  " + validity_note(cfg.label(), kind))
    return 0
