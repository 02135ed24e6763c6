"""The stage runner.

A pipeline config names a ``method`` (a key of :data:`PIPELINES`), an ``out`` folder, a
``seed``, the method's own section (validated by the method's config dataclass) and ``train``,
a fedloom run config for the stages that train. The method returns its stages in order; the
runner gives stage ``k`` the folder ``out/<k>-<name>/`` and:

* writes the resolved pipeline config (``out/pipeline.yaml``) and the stage's own settings
  (``config.yaml``) before it runs;
* runs it, then writes ``done.json`` (the stage's summary and its seconds);
* on a rerun skips every stage whose ``done.json`` exists, and re-enters a cut-off stage in
  its folder so the stage can resume (generation jobs skip finished prompts, training resumes
  from its checkpoint).

A stage's summary is JSON; later stages read earlier stages' outputs through ``ctx.folder_of``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from rich.console import Console

from fedloom.config import ConfigError, RunConfig, _build, apply_override, config_from_dict
from fedloom.errors import FedloomError


class PipelineError(FedloomError, RuntimeError):
    """A pipeline config or stage folder is not usable."""


@dataclass
class StageContext:
    folder: Path
    out: Path
    console: Console
    stage_folders: dict[str, Path]

    def folder_of(self, stage: str) -> Path:
        """The folder of an earlier stage (its outputs)."""
        if stage not in self.stage_folders:
            raise PipelineError(f"no stage {stage!r} before this one")
        return self.stage_folders[stage]


@dataclass
class Stage:
    name: str
    run: Callable[[StageContext], dict[str, Any]]
    """Does the work in ``ctx.folder``; returns a JSON summary. Must be safe to re-enter after a
    kill (resume or redo, never double-count)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What this stage runs with, saved as its config.yaml."""


class PipelineMethod:
    """A pipeline method: ``config_cls`` validates its section; ``stages`` lists the work."""

    name: ClassVar[str]
    config_cls: ClassVar[type]

    def stages(self, cfg: PipelineConfig) -> list[Stage]:
        raise NotImplementedError


PIPELINES: dict[str, type[PipelineMethod]] = {}


def register_pipeline(cls: type[PipelineMethod]) -> type[PipelineMethod]:
    if cls.name in PIPELINES:
        raise ValueError(f"pipeline {cls.name!r} is already registered")
    PIPELINES[cls.name] = cls
    return cls


@dataclass
class PipelineConfig:
    method: str
    out: str
    seed: int
    params: Any
    """The method's validated config dataclass (the YAML section named after the method)."""
    train: RunConfig
    """The run config the training stages start from (data sources are filled in by them)."""
    raw: dict[str, Any]

    def save(self, path: Path) -> None:
        data = {
            "method": self.method,
            "out": self.out,
            "seed": self.seed,
            self.method: dataclasses.asdict(self.params),
            "train": self.train.to_dict(),
        }
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    import fedloom.bench.pipeline  # noqa: F401  (registers the pipeline methods)
    import fedloom.safety  # noqa: F401
    import fedloom.synth  # noqa: F401

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pipeline config {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping (method:, out:, ...)")
    for o in overrides or []:
        apply_override(data, o)
    method = data.get("method")
    if method not in PIPELINES:
        raise ConfigError(f"`method` is {method!r}; choose one of {sorted(PIPELINES)}")
    known = {"method", "out", "seed", method, "train"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key `{unknown[0]}` in {p}; known keys: {sorted(known)}")
    if not isinstance(data.get("out"), str) or not data["out"]:
        raise ConfigError(f"{p}: `out` (the pipeline's folder) must be a path")
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}")
    cls = PIPELINES[method]
    params = _build(cls.config_cls, data.get(method) or {}, method)
    train_raw = dict(data.get("train") or {})
    train_raw.setdefault("seed", seed)
    # the training stage replaces the sources; a placeholder keeps the run config valid here
    train_raw.setdefault("data", {}).setdefault("sources", [{"name": "alpaca_en"}])
    train = config_from_dict(train_raw)
    return PipelineConfig(method, data["out"], seed, params, train, data)


def run_pipeline(cfg: PipelineConfig, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) every stage; returns {stage: summary}."""
    console = console or Console()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "pipeline.yaml"
    cfg.save(saved.with_suffix(".yaml.new"))
    if saved.exists() and saved.read_text() != saved.with_suffix(".yaml.new").read_text():
        console.print(
            f"[yellow]{saved} differs from this config: finished stages are kept as they are "
            "(delete a stage's folder, or the whole folder, to redo it)[/yellow]"
        )
    saved.with_suffix(".yaml.new").replace(saved)
    method = PIPELINES[cfg.method]()
    summaries = run_stages(out, method.stages(cfg), console)
    (out / "summary.json").write_text(json.dumps(summaries, indent=2, ensure_ascii=False))
    return summaries


def run_stages(out: Path, stages: list[Stage], console: Console) -> dict[str, Any]:
    """Run ``stages`` in order in ``out/<k>-<name>/``, skipping those with a ``done.json``;
    returns {stage: summary}. Used by :func:`run_pipeline` and by ``fedloom audit``."""
    out.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise PipelineError(f"stage names repeat: {names}")
    folders: dict[str, Path] = {}
    summaries: dict[str, Any] = {}
    for k, stage in enumerate(stages, start=1):
        folder = out / f"{k}-{stage.name}"
        folder.mkdir(exist_ok=True)
        done = folder / "done.json"
        if done.exists():
            summaries[stage.name] = json.loads(done.read_text())["summary"]
            console.print(f"[dim]stage {k}/{len(stages)} {stage.name}: done, skipped[/dim]")
            folders[stage.name] = folder
            continue
        (folder / "config.yaml").write_text(
            yaml.safe_dump(stage.settings, sort_keys=False, allow_unicode=True)
        )
        console.rule(f"stage {k}/{len(stages)}: {stage.name}")
        t0 = time.perf_counter()
        summary = stage.run(StageContext(folder, out, console, dict(folders)))
        seconds = time.perf_counter() - t0
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({"summary": summary, "seconds": round(seconds, 1)}, indent=2))
        tmp.replace(done)
        summaries[stage.name] = summary
        folders[stage.name] = folder
    return summaries
