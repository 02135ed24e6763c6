from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.config import ConfigError, load_config
from tests.conftest import ROOT


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (
            "federation: {rounds: 2, sample_clients: 5}\npartition: {num_clients: 4}",
            [],
            r"`federation.sample_clients` \(5\) must be <= `partition.num_clients` \(4\)",
        ),
        ("federation: {rounds: 2, colour: red}", [], r"unknown key `federation.colour`"),
        ("bogus: 1", [], r"unknown key `bogus`"),
        (
            "federation: {algorithm: fedsgd}",
            [],
            r"`federation.algorithm` is 'fedsgd'; choose one of",
        ),
        (
            "federation: {algorithm: fedprox, params: {mu: -1}}",
            [],
            r"`federation.params` for 'fedprox': `mu` must be >= 0",
        ),
        (
            "federation: {algorithm: fedavg, params: {mu: 0.1}}",
            [],
            r"`federation.params` for 'fedavg'.*known parameters: \['weighted'\]",
        ),
        ("train: {lr: 0}", [], r"`train.lr` must be > 0"),
        (
            "train: {local_steps: two}",
            [],
            r"`train.local_steps` is 'two': give a number >= 1 or `dynamic`",
        ),
        ("model: {precision: fp8}", [], r"`model.precision` is 'fp8'"),
        (
            "partition: {strategy: dirichlet, num_clients: null}",
            [],
            r"`partition.num_clients` is required",
        ),
        ("", ["federation.rounds=0"], r"`federation.rounds` must be >= 1"),
        ("", ["federation"], r"--set expects key=value"),
        ("data: {sources: [{name: local}]}", [], r"source `local` needs `path:`"),
        ("eval: {suites: [mmlu, bbq]}", [], r"`eval.suites` has unknown \['bbq'\]"),
    ],
)
def test_config_errors_name_the_field(
    tmp_path: Path, text: str, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), overrides)


def test_overrides_and_roundtrip(tmp_path: Path) -> None:
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        ["federation.rounds=3", "train.lr=1e-4", "federation.params={weighted: false}"],
    )
    assert (
        cfg.federation.rounds == 3
        and cfg.train.lr == 1e-4
        and cfg.federation.params == {"weighted": False}
    )
    cfg.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/run.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    import yaml

    if "method" in (yaml.safe_load(path.read_text()) or {}):  # a pipeline config
        from fedloom.pipeline import load_pipeline_config

        assert load_pipeline_config(path).train.federation.rounds >= 1
    else:
        assert load_config(path).federation.rounds >= 1


def test_task_and_beta_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"`task` is 'rlhf'; choose one of \['classify', 'dpo', 'sft'\]"
    ):
        load_config(ROOT / "configs" / "tiny.yaml", ["task=rlhf"])
    with pytest.raises(ConfigError, match=r"`train.beta` must be > 0"):
        load_config(ROOT / "configs" / "tiny-dpo.yaml", ["train.beta=0"])


def test_every_yaml_block_in_the_docs_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docs show configs that run: every ```yaml block in README.md and docs/*.md that is a
    run config (or a section of one) loads and validates. Local files it names are created
    empty in a scratch folder (their content is checked when a run reads them)."""
    import re

    import yaml

    from fedloom.config import config_from_dict

    monkeypatch.chdir(tmp_path)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    blocks = [
        (page.name, block)
        for page in pages
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)
    ]
    assert len(blocks) >= 3
    for name, block in blocks:
        raw = yaml.safe_load(block)
        if "method" in raw:  # a pipeline config (fedloom pipeline)
            from fedloom.pipeline import load_pipeline_config

            (tmp_path / "pipeline.yaml").write_text(block)
            try:
                load_pipeline_config(tmp_path / "pipeline.yaml")
            except ConfigError as e:
                raise AssertionError(f"{name}: a pipeline yaml block does not load: {e}") from None
            continue
        attack = (raw.get("safety") or {}).get("attack")
        for src in [*(raw.get("data") or {}).get("sources", []), *([attack] if attack else [])]:
            if src.get("path"):
                Path(src["path"]).parent.mkdir(parents=True, exist_ok=True)
                Path(src["path"]).touch()
        try:
            config_from_dict(raw)
        except ConfigError as e:
            raise AssertionError(f"{name}: a yaml block does not load: {e}\n{block}") from None
