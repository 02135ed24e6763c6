"""The stage runner on its own: folders keyed by name (and seed), resume, inserting / cutting /
reordering stages without rerunning finished ones, migrating the older numbered layout, and the
pipeline config's `seeds`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from fedloom.config import ConfigError
from fedloom.pipeline import (
    PipelineError,
    Stage,
    StageContext,
    load_pipeline_config,
    migrate_numbered,
    run_stages,
    seeded,
)

QUIET = Console(quiet=True)


class Recorder:
    """Stages whose bodies log each call and write a marker file."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def stage(self, name: str, seed: int | None = None, fail: bool = False) -> Stage:
        def body(ctx: StageContext) -> dict[str, Any]:
            self.calls.append(name if ctx.seed is None else f"{name}.s{ctx.seed}")
            (ctx.folder / "out.txt").write_text(name)
            if fail:
                raise RuntimeError("killed")
            return {"name": name, "seed": ctx.seed}

        return Stage(name, body, {"n": name}, seed=seed)


def test_folders_are_keyed_by_name_and_seed(tmp_path: Path) -> None:
    r = Recorder()
    stages = [r.stage("data"), *seeded([r.stage("train"), r.stage("eval")], 1), r.stage("table")]
    out = run_stages(tmp_path, stages, QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "eval.s1", "table", "train.s1"]
    assert out["train.s1"] == {"name": "train", "seed": 1}
    assert out["data"] == {"name": "data", "seed": None}
    done = json.loads((tmp_path / "eval.s1" / "done.json").read_text())
    assert done["summary"] == {"name": "eval", "seed": 1} and "seconds" in done
    assert yaml.safe_load((tmp_path / "train.s1" / "config.yaml").read_text()) == {"n": "train"}


def test_rerun_skips_finished_and_reenters_a_cut_stage(tmp_path: Path) -> None:
    r = Recorder()
    with pytest.raises(RuntimeError):
        run_stages(tmp_path, [r.stage("a"), r.stage("b", fail=True), r.stage("c")], QUIET)
    assert r.calls == ["a", "b"]
    assert (tmp_path / "b" / "out.txt").exists() and not (tmp_path / "b" / "done.json").exists()
    r2 = Recorder()
    run_stages(tmp_path, [r2.stage("a"), r2.stage("b"), r2.stage("c")], QUIET)
    assert r2.calls == ["b", "c"]  # a is done; b re-entered in its own folder


def test_insert_cut_and_reorder_rerun_nothing_finished(tmp_path: Path) -> None:
    r = Recorder()
    run_stages(tmp_path, [r.stage("a"), r.stage("b"), r.stage("c")], QUIET)
    inserted = Recorder()
    run_stages(tmp_path, [inserted.stage(n) for n in ("a", "new", "b", "c")], QUIET)
    assert inserted.calls == ["new"]
    cut = Recorder()
    run_stages(tmp_path, [cut.stage(n) for n in ("a", "c")], QUIET)
    assert cut.calls == []
    reordered = Recorder()
    out = run_stages(tmp_path, [reordered.stage(n) for n in ("c", "new", "a", "b")], QUIET)
    assert reordered.calls == [] and list(out) == ["c", "new", "a", "b"]
    more_seeds = Recorder()
    run_stages(tmp_path, [more_seeds.stage("a"), *seeded([more_seeds.stage("t")], 2)], QUIET)
    assert more_seeds.calls == ["t.s2"]


def test_context_resolves_the_stage_of_its_own_seed(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def reader(ctx: StageContext) -> dict[str, Any]:
        seen[f"s{ctx.seed}"] = (ctx.folder_of("train").name, ctx.summary_of("data")["v"])
        return {}

    def table(ctx: StageContext) -> dict[str, Any]:
        seen["table"] = [ctx.summary_of("train", seed=s)["v"] for s in (0, 1)]
        assert ctx.has("train", seed=1) and not ctx.has("train", seed=5)
        with pytest.raises(PipelineError, match="no stage 'missing'"):
            ctx.folder_of("missing")
        return {}

    def const(v: Any) -> Any:
        return lambda ctx: {"v": v if ctx.seed is None else f"{v}{ctx.seed}"}

    stages = [Stage("data", const("d"))]
    for s in (0, 1):
        stages += seeded([Stage("train", const("t")), Stage("read", reader)], s)
    stages.append(Stage("table", table))
    run_stages(tmp_path, stages, QUIET)
    assert seen == {"s0": ("train.s0", "d"), "s1": ("train.s1", "d"), "table": ["t0", "t1"]}


def test_repeated_keys_are_refused(tmp_path: Path) -> None:
    r = Recorder()
    with pytest.raises(PipelineError, match="repeat"):
        run_stages(tmp_path, [r.stage("a"), r.stage("a")], QUIET)
    run_stages(tmp_path, [*seeded([r.stage("a")], 0), *seeded([r.stage("a")], 1)], QUIET)


def _numbered(root: Path, names: list[str], done: bool = True) -> None:
    for k, n in enumerate(names, start=1):
        d = root / f"{k}-{n}"
        d.mkdir(parents=True)
        if done:
            (d / "done.json").write_text(json.dumps({"summary": {"old": n}, "seconds": 1}))


def test_numbered_layout_is_renamed_once_and_not_rerun(tmp_path: Path) -> None:
    _numbered(tmp_path, ["data", "train", "gone", "table"])
    (tmp_path / "2-train" / "checkpoint.pt").write_text("x")
    (tmp_path / "3-gone" / "done.json").unlink()
    r = Recorder()
    stages = [r.stage("data"), *seeded([r.stage("train"), r.stage("eval")], 3), r.stage("table")]
    out = run_stages(tmp_path, stages, QUIET, numbered_seed=3)
    # data and table keep their names; train was seed 3's (the old run's only seed)
    assert r.calls == ["eval.s3"]
    assert out["train.s3"] == {"old": "train"} and out["table"] == {"old": "table"}
    assert (tmp_path / "train.s3" / "checkpoint.pt").exists()
    assert (tmp_path / "3-gone").exists()  # no stage of this config: left as it is
    assert not (tmp_path / "1-data").exists()
    # a second migration finds nothing new to do
    assert migrate_numbered(tmp_path, stages, 3, QUIET) == 0


def test_numbered_folder_of_another_seed_or_taken_name_is_left(tmp_path: Path) -> None:
    _numbered(tmp_path, ["train", "data"])
    (tmp_path / "data").mkdir()
    r = Recorder()
    stages = [r.stage("data"), *seeded([r.stage("train")], 1)]
    assert migrate_numbered(tmp_path, stages, 0, QUIET) == 0  # old run was seed 0; data taken
    assert (tmp_path / "1-train").exists() and (tmp_path / "2-data").exists()


def _pipeline_yaml(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(
        f"method: bench\nout: {tmp_path / 'out'}\n{extra}\nbench:\n  federations: [fed-chat]\n"
        "  methods: [fedavg]\n  suites: []\n  stats: false\n"
    )
    return p


def test_pipeline_config_seeds(tmp_path: Path) -> None:
    cfg = load_pipeline_config(_pipeline_yaml(tmp_path, "seeds: [2, 0]"))
    assert cfg.seeds == [2, 0] and cfg.seed == 2 and cfg.train.seed == 2
    s0 = cfg.for_seed(0)
    assert s0.seed == 0 and s0.train.seed == 0 and cfg.train.seed == 2
    assert load_pipeline_config(_pipeline_yaml(tmp_path, "seed: 4")).seeds == [4]
    assert load_pipeline_config(_pipeline_yaml(tmp_path, "")).seeds == [0]
    over = load_pipeline_config(_pipeline_yaml(tmp_path, ""), ["seeds=[0,1,2]"])
    assert over.seeds == [0, 1, 2]
    keys = [
        s.key
        for s in __import__("fedloom.pipeline", fromlist=["PIPELINES"])
        .PIPELINES["bench"]()
        .stages(over)
    ]
    assert "fed-chat.fedavg.s2" in keys and "base.fed-chat.s1" in keys


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        ("seed: 0\nseeds: [0]", "not both"),
        ("seeds: []", "non-empty list"),
        ("seeds: [0, 0]", "twice"),
        ("seeds: [-1]", ">= 0"),
        ("seeds: zero", "non-empty list"),
    ],
)
def test_bad_seeds_are_one_line_errors(tmp_path: Path, extra: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        load_pipeline_config(_pipeline_yaml(tmp_path, extra))


def test_bench_seeds_moved_to_the_top_level(tmp_path: Path) -> None:
    p = _pipeline_yaml(tmp_path, "")
    with pytest.raises(ConfigError, match="moved to the top level"):
        load_pipeline_config(p, ["bench.seeds=[0,1]"])


def test_always_stages_rerun_and_changed_settings_are_named(tmp_path: Path) -> None:
    from io import StringIO

    r = Recorder()
    table = Stage("table", lambda ctx: {"rows": len(ctx.stage_folders)}, always=True)
    run_stages(tmp_path, [r.stage("a"), table], QUIET)
    out = run_stages(tmp_path, [r.stage("a"), r.stage("b"), table], QUIET)
    assert out["table"] == {"rows": 2} and r.calls == ["a", "b"]
    buf = StringIO()
    changed = Stage("a", lambda ctx: {}, {"n": "other"})
    run_stages(tmp_path, [changed], Console(file=buf, width=200))
    assert "a: done, skipped (its settings changed since" in buf.getvalue()


def test_default_stages_are_per_seed_then_one_table(tmp_path: Path) -> None:
    from fedloom.pipeline import PipelineMethod

    class Two(PipelineMethod):
        name = "two"
        config_cls = dict

        def seed_stages(self, cfg: Any) -> list[Stage]:
            return [Stage("a", lambda ctx: {"seed": cfg.seed}), Stage("b", lambda ctx: {})]

        def table(self, ctx: StageContext, cfg: Any) -> dict[str, Any]:
            return {"a": [ctx.summary_of("a", seed=s)["seed"] for s in cfg.seeds]}

    cfg = load_pipeline_config(_pipeline_yaml(tmp_path, "seeds: [3, 5]"))
    stages = Two().stages(cfg)
    assert [s.key for s in stages] == ["a.s3", "b.s3", "a.s5", "b.s5", "table"]
    assert stages[-1].always and stages[-1].settings == {"seeds": [3, 5]}
    out = run_stages(tmp_path / "o", stages, QUIET)
    assert out["table"] == {"a": [3, 5]}
