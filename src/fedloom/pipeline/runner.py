"""The stage runner.

A pipeline config names a ``method`` (a key of :data:`PIPELINES`), an ``out`` folder, the
``seeds`` it runs with, the method's own section (validated by the method's config dataclass)
and ``train``, a fedloom run config for the stages that train. The method returns its stages in
order; a stage is keyed by its name and, for the stages that run once per seed, its seed. The
runner gives each stage the folder ``out/<name>/`` (``out/<name>.s<seed>/`` for a seeded
stage) and:

* writes the resolved pipeline config (``out/pipeline.yaml``) and the stage's own settings
  (``config.yaml``) before it runs;
* runs it, then writes ``done.json`` (the stage's summary and its seconds);
* on a rerun skips every stage whose ``done.json`` exists, and re-enters a cut-off stage in
  its folder so the stage can resume (generation jobs skip finished prompts, training resumes
  from its checkpoint).

Folders are keyed by name, not position: adding, cutting or reordering stages leaves every
finished stage where it is. A folder written by the older numbered layout (``out/<k>-<name>/``)
is renamed once, on the first run that knows its stage.

A stage's summary is JSON; later stages read earlier stages' outputs through
``ctx.folder_of`` and their summaries through ``ctx.summary_of``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from rich.console import Console

from fedloom.config import check_sources_in, config_from_dict
from fedloom.errors import FedloomError
from fedloom.settings import ConfigError, RunConfig, _build, apply_override


class PipelineError(FedloomError, RuntimeError):
    """A pipeline config or stage folder is not usable."""


def stage_key(name: str, seed: int | None) -> str:
    """The folder name of a stage: its name, plus ``.s<seed>`` for a seeded stage."""
    return name if seed is None else f"{name}.s{seed}"


@dataclass
class StageContext:
    folder: Path
    out: Path
    console: Console
    stage_folders: dict[str, Path]
    """Folders of the stages before this one, by :func:`stage_key`."""
    seed: int | None = None
    """This stage's seed (None: a stage that runs once, e.g. a table over every seed)."""

    def _key(self, stage: str, seed: int | None) -> str:
        seed = self.seed if seed is None else seed
        for key in (stage_key(stage, seed), stage):
            if key in self.stage_folders:
                return key
        where = f" (seed {seed})" if seed is not None else ""
        raise PipelineError(f"no stage {stage!r}{where} before this one")

    def folder_of(self, stage: str, seed: int | None = None) -> Path:
        """The folder of an earlier stage (its outputs); a seeded stage's of this stage's seed
        unless ``seed`` is given."""
        return self.stage_folders[self._key(stage, seed)]

    def record_of(self, stage: str, seed: int | None = None) -> dict[str, Any]:
        """An earlier stage's ``done.json``: ``summary`` and ``seconds``."""
        done = self.folder_of(stage, seed) / "done.json"
        return dict(json.loads(done.read_text()))

    def summary_of(self, stage: str, seed: int | None = None) -> dict[str, Any]:
        """The summary an earlier stage returned (read from its ``done.json``)."""
        return dict(self.record_of(stage, seed)["summary"])

    def finished(self) -> list[str]:
        """Keys of the earlier stages (every one finished: stages run in order)."""
        return list(self.stage_folders)

    def has(self, stage: str, seed: int | None = None) -> bool:
        """Whether an earlier stage of this name (and seed) ran."""
        try:
            self._key(stage, seed)
        except PipelineError:
            return False
        return True


@dataclass
class Stage:
    name: str
    run: Callable[[StageContext], dict[str, Any]]
    """Does the work in ``ctx.folder``; returns a JSON summary. Must be safe to re-enter after a
    kill (resume or redo, never double-count)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """What this stage runs with, saved as its config.yaml."""
    seed: int | None = None
    """The seed of a stage that runs once per seed (folder ``<name>.s<seed>``)."""
    always: bool = False
    """Run on every run, finished or not (tables and reports: cheap, and they must show every
    stage finished so far)."""

    @property
    def key(self) -> str:
        return stage_key(self.name, self.seed)


def seeded(stages: list[Stage], seed: int) -> list[Stage]:
    """The same stages marked as the runs of one seed (their folders carry the seed)."""
    return [dataclasses.replace(s, seed=seed) for s in stages]


class PipelineMethod:
    """A pipeline method: ``config_cls`` validates its section; ``stages`` lists the work.

    The usual shape is per seed, then one table: implement ``seed_stages`` (the stages of one
    seed, built from ``cfg.for_seed(s)``) and ``table`` (a stage body that pools the seeds), and
    the default ``stages`` runs every seed's stages (folders ``<name>.s<seed>``) and then the
    table (``always``: redrawn on every run). A pipeline of another shape overrides ``stages``."""

    name: ClassVar[str]
    config_cls: ClassVar[type]

    def stages(self, cfg: PipelineConfig) -> list[Stage]:
        st: list[Stage] = []
        for s in cfg.seeds:
            st += seeded(self.seed_stages(cfg.for_seed(s)), s)
        table = functools.partial(self.table, cfg=cfg)
        return [*st, Stage("table", table, {"seeds": list(cfg.seeds)}, always=True)]

    def preflight(self, cfg: PipelineConfig) -> None:
        """Check the outside services the stages will use (e.g. a judge's endpoint), before
        the first stage that has work to do: a dead endpoint fails in seconds, not after hours
        of stages. Default: nothing to check."""

    def seed_stages(self, cfg: PipelineConfig) -> list[Stage]:
        raise NotImplementedError(f"pipeline {self.name!r} defines neither stages nor seed_stages")

    def table(self, ctx: StageContext, cfg: PipelineConfig) -> dict[str, Any]:
        raise NotImplementedError(f"pipeline {self.name!r} defines no table")


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
    """The seed of the stages being built (one of ``seeds``; see :meth:`for_seed`)."""
    params: Any
    """The method's validated config dataclass (the YAML section named after the method)."""
    train: RunConfig
    """The run config the training stages start from (data sources are filled in by them)."""
    raw: dict[str, Any]
    seeds: list[int] = field(default_factory=lambda: [0])
    """Every seed the pipeline runs (`seeds:`; default [0]); data splits, generation sampling
    and training are seeded per seed."""

    def for_seed(self, seed: int) -> PipelineConfig:
        """This config as seen by the stages of one seed (``train.seed`` follows)."""
        train = dataclasses.replace(self.train, seed=seed)
        return dataclasses.replace(self, seed=seed, train=train)

    def save(self, path: Path) -> None:
        data = {
            "method": self.method,
            "out": self.out,
            "seeds": list(self.seeds),
            self.method: dataclasses.asdict(self.params),
            "train": self.train.to_dict(),
        }
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _seeds(data: dict[str, Any]) -> list[int]:
    if "seed" in data and "seeds" in data:
        raise ConfigError("give `seeds: [...]` or `seed: N`, not both")
    seeds = data.get("seeds", [data.get("seed", 0)])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise ConfigError(f"`seeds` must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"`seeds` lists a seed twice: {seeds}")
    return list(seeds)


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read and validate a pipeline config. The pipeline methods must be registered first
    (``import fedloom.pipelines`` does it for the shipped ones; the CLI imports it)."""
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
    known = {"method", "out", "seed", "seeds", method, "train"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key `{unknown[0]}` in {p}; known keys: {sorted(known)}")
    if not isinstance(data.get("out"), str) or not data["out"]:
        raise ConfigError(f"{p}: `out` (the pipeline's folder) must be a path")
    seeds = _seeds(data)
    cls = PIPELINES[method]
    params = _build(cls.config_cls, data.get(method) or {}, method)
    check_sources_in(params, method)
    train_raw = dict(data.get("train") or {})
    train_raw.setdefault("seed", seeds[0])
    # the training stage replaces the sources; a placeholder keeps the run config valid here
    train_raw.setdefault("data", {}).setdefault("sources", [{"name": "alpaca_en"}])
    train = config_from_dict(train_raw)
    return PipelineConfig(method, data["out"], seeds[0], params, train, data, seeds)


def run_pipeline(cfg: PipelineConfig, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) every stage; returns {stage key: summary}."""
    console = console or Console()
    method = PIPELINES[cfg.method]()
    stages = method.stages(cfg)  # built (and checked) before anything is written
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "pipeline.yaml"
    old_seed = _saved_seed(saved)
    cfg.save(saved.with_suffix(".yaml.new"))
    if saved.exists() and saved.read_text() != saved.with_suffix(".yaml.new").read_text():
        console.print(
            f"[yellow]{saved} differs from this config: finished stages are kept as they are "
            "(delete a stage's folder, or the whole folder, to redo it)[/yellow]"
        )
    saved.with_suffix(".yaml.new").replace(saved)
    check = functools.partial(method.preflight, cfg)
    summaries = run_stages(out, stages, console, numbered_seed=old_seed, before_work=check)
    (out / "summary.json").write_text(json.dumps(summaries, indent=2, ensure_ascii=False))
    return summaries


def _saved_seed(saved: Path) -> int:
    """The seed an earlier (single-seed, numbered-layout) run of this folder was made with."""
    if not saved.exists():
        return 0
    data = yaml.safe_load(saved.read_text()) or {}
    seeds = data.get("seeds") or [data.get("seed", 0)]
    return int(seeds[0])


NUMBERED = re.compile(r"^(\d+)-(.+)$")


def migrate_numbered(out: Path, stages: list[Stage], seed: int, console: Console) -> int:
    """Rename the folders of the older layout, ``out/<k>-<name>/``, to this runner's
    ``out/<name>/`` (``<name>.s<seed>`` for a seeded stage: the older layout had one seed,
    ``seed``). A folder whose name no stage has, or whose new name is taken, is left as it is
    (and counted). Returns how many were renamed."""
    old = (
        [d for d in out.iterdir() if d.is_dir() and NUMBERED.match(d.name)] if out.is_dir() else []
    )
    if not old:
        return 0
    targets: dict[str, str] = {}
    for s in stages:
        targets.setdefault(s.key, s.key)  # cross-seed stages, or names that carried the seed
        if s.seed == seed:
            targets.setdefault(s.name, s.key)
    renamed, left = 0, []
    for d in sorted(old, key=lambda d: int(NUMBERED.match(d.name).group(1))):  # type: ignore[union-attr]
        name = NUMBERED.match(d.name).group(2)  # type: ignore[union-attr]
        new = out / targets[name] if name in targets else None
        if new is None or new.exists():
            left.append(d.name)
            continue
        d.rename(new)
        renamed += 1
    note = (
        f"; {len(left)} left as they are (no stage of this config, or the name is taken: "
        f"{', '.join(left[:5])}{' ...' if len(left) > 5 else ''})"
        if left
        else ""
    )
    console.print(
        f"[yellow]renamed {renamed} numbered stage folders to name-keyed ones{note}[/yellow]"
    )
    return renamed


def run_stages(
    out: Path,
    stages: list[Stage],
    console: Console,
    numbered_seed: int = 0,
    before_work: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run ``stages`` in order in ``out/<key>/``, skipping those with a ``done.json``;
    returns {stage key: summary}. Used by :func:`run_pipeline` and by ``fedloom audit``.
    Folders of the older numbered layout are renamed first (:func:`migrate_numbered`).
    ``before_work`` runs once, before the first stage (other than an ``always`` one) that is
    not done."""
    keys = [s.key for s in stages]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise PipelineError(f"stage names repeat: {dupes}")
    out.mkdir(parents=True, exist_ok=True)
    migrate_numbered(out, stages, numbered_seed, console)
    folders: dict[str, Path] = {}
    summaries: dict[str, Any] = {}
    for k, stage in enumerate(stages, start=1):
        folder = out / stage.key
        done = folder / "done.json"
        settings = yaml.safe_dump(stage.settings, sort_keys=False, allow_unicode=True)
        if done.exists() and not stage.always:
            summaries[stage.key] = json.loads(done.read_text())["summary"]
            saved = folder / "config.yaml"
            changed = saved.exists() and saved.read_text() != settings
            note = " (its settings changed since: delete the folder to redo it)" if changed else ""
            console.print(f"[dim]stage {k}/{len(stages)} {stage.key}: done, skipped{note}[/dim]")
            folders[stage.key] = folder
            continue
        if before_work is not None and not stage.always:
            before_work()
            before_work = None
        folder.mkdir(exist_ok=True)
        done.unlink(missing_ok=True)
        (folder / "config.yaml").write_text(settings)
        console.rule(f"stage {k}/{len(stages)}: {stage.key}")
        t0 = time.perf_counter()
        summary = stage.run(StageContext(folder, out, console, dict(folders), stage.seed))
        seconds = time.perf_counter() - t0
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({"summary": summary, "seconds": round(seconds, 1)}, indent=2))
        tmp.replace(done)
        summaries[stage.key] = summary
        folders[stage.key] = folder
    return summaries
