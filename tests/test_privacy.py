"""Privacy: accounting against Opacus and closed forms, per-example clipping, central DP against
hand-computed aggregates, budgets, config errors, DP under every algorithm."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.optimizers import DPOptimizer

from fedloom.algorithms import ClientUpdate, build_strategy
from fedloom.algorithms.aggregate import subtract
from fedloom.config import CentralDPConfig, ClientDPConfig, ConfigError
from fedloom.engine import run
from fedloom.engine.inprocess import Federation
from fedloom.models import get_adapter_state
from fedloom.privacy import CentralDP, epsilon, noise_for_epsilon, update_norm
from fedloom.privacy.accounting import add_steps
from fedloom.privacy.client_dp import DPPlan, private_gradient

from .conftest import dpo_config, tiny_config


# -- accounting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("accountant_cls", [RDPAccountant, PRVAccountant])
def test_epsilon_equals_opacus_stepped_accountant(accountant_cls: type) -> None:
    """Our history (two clients' rounds merged, as a client keeps it) against Opacus' own
    accountant stepped once per optimizer step."""
    schedule = [(1.1, 0.05, 7), (1.1, 0.05, 3), (0.8, 0.1, 5)]
    history: list[tuple[float, float, int]] = []
    acc = accountant_cls()
    for sigma, q, steps in schedule:
        history = add_steps(history, sigma, q, steps)
        for _ in range(steps):
            acc.step(noise_multiplier=sigma, sample_rate=q)
    assert history == [(1.1, 0.05, 10), (0.8, 0.1, 5)]
    name = "rdp" if accountant_cls is RDPAccountant else "prv"
    assert epsilon(history, 1e-5, name) == pytest.approx(acc.get_epsilon(delta=1e-5), abs=1e-6)


def test_rdp_epsilon_full_batch_closed_form() -> None:
    """q = 1: the Gaussian mechanism's RDP is T·α/(2σ²); ε = min_α RDP + log((α−1)/α)
    − (log δ + log α)/(α − 1) (Balle et al. 2020, the conversion Opacus uses)."""
    sigma, steps, delta = 2.0, 10, 1e-5
    alphas = np.array(RDPAccountant.DEFAULT_ALPHAS, dtype=float)
    rdp = steps * alphas / (2 * sigma**2)
    eps = rdp + np.log((alphas - 1) / alphas) - (np.log(delta) + np.log(alphas)) / (alphas - 1)
    assert epsilon([(sigma, 1.0, steps)], delta, "rdp") == pytest.approx(eps.min(), abs=1e-6)
    assert epsilon([], delta, "rdp") == 0.0
    assert epsilon([(0.0, 0.1, 1)], delta, "rdp") == math.inf


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_target_epsilon_calibrates_noise(accountant: str) -> None:
    sigma = noise_for_epsilon(3.0, 1e-3, 0.08, 40, accountant)
    eps = epsilon([(sigma, 0.08, 40)], 1e-3, accountant)
    assert 3.0 - 0.02 <= eps <= 3.0
    # less noise would overspend
    assert epsilon([(sigma * 0.95, 0.08, 40)], 1e-3, accountant) > 3.0
    with pytest.raises(ConfigError, match="no noise multiplier reaches"):
        noise_for_epsilon(1e-9, 1e-3, 1.0, 10**6, "rdp")


# -- configuration errors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise_multiplier": 1.0, "target_epsilon": 3.0}, "not both"),
        ({}, "give `noise_multiplier`"),
        ({"noise_multiplier": 1.0, "delta": 1.0}, r"delta` must be in \(0, 1\)"),
        ({"noise_multiplier": 1.0, "delta": 0.0}, r"delta` must be in \(0, 1\)"),
        ({"noise_multiplier": 1.0, "max_grad_norm": 0.0}, r"max_grad_norm` \(C\) must be > 0"),
        ({"noise_multiplier": -1.0}, "noise_multiplier` must be >= 0"),
        ({"target_epsilon": 3.0, "max_epsilon": 4.0}, "max_epsilon` goes with"),
        ({"noise_multiplier": 1.0, "accountant": "gdp2"}, "choose one of"),
    ],
)
def test_client_dp_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClientDPConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise_multiplier": 1.0, "target_epsilon": 3.0}, "not both"),
        ({"noise_multiplier": 1.0, "clip_norm": 0.0}, r"clip_norm` \(C\) must be > 0"),
        ({"noise_multiplier": 1.0, "delta": 2.0}, r"delta` must be in \(0, 1\)"),
    ],
)
def test_central_dp_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CentralDPConfig(**kwargs)


def test_run_config_privacy_errors(local_data: Path) -> None:
    central = {"central_dp": {"noise_multiplier": 1.0}}
    with pytest.raises(ConfigError, match="also uploads control variates"):
        tiny_config(local_data, **{"privacy": central, "federation.algorithm": "scaffold"})
    with pytest.raises(ConfigError, match=r"needs 0 < noise_multiplier < 2·count_noise = 0.2"):
        tiny_config(local_data, privacy={"central_dp": {"noise_multiplier": 1.0, "adaptive": True}})
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        tiny_config(
            local_data,
            privacy={"client_dp": {"noise_multiplier": 1.0}},
            **{"model.gradient_checkpointing": True},
        )
    with pytest.warns(UserWarning, match="lora.dropout set from 0.1 to 0"):
        cfg = tiny_config(
            local_data, privacy={"client_dp": {"noise_multiplier": 1.0}}, **{"lora.dropout": 0.1}
        )
    assert cfg.lora.dropout == 0.0


# -- per-example clipping -----------------------------------------------------------------------
def _dp_gradient(fed: Federation, examples: list, clip: float) -> list[torch.Tensor]:
    """Σ_i clip(g_i) for ``examples`` (noise 0, 'mean' undone by the expected batch of 1)."""
    params = [p for p in fed.model.parameters() if p.requires_grad]
    opt = DPOptimizer(
        torch.optim.SGD(params, lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=1,
    )
    gsm = GradSampleModule(fed.model, batch_first=True, loss_reduction="sum", strict=False)
    try:
        fed.model.train()
        private_gradient(fed.trainer, opt, examples, params, DPPlan(0.0, 1.0, 0.1, 1), None)  # type: ignore[arg-type]
        out = [p.grad.detach().clone() for p in params]  # type: ignore[union-attr]
        opt.zero_grad(set_to_none=True)
    finally:
        gsm._close()
        fed.model.eval()
    return out


def _norm(grads: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))


@pytest.mark.parametrize("task", ["sft", "dpo"])
def test_per_example_clipping_bounds_each_contribution(
    task: str, local_data: Path, pair_data: Path
) -> None:
    """With noise 0 and a tiny C, each example's (each pair's) gradient is clipped to norm C,
    and a micro-batched logical batch's gradient is exactly the sum of the clipped ones."""
    cfg = (
        dpo_config(pair_data, **{"train.batch_size": 2})
        if task == "dpo"
        else tiny_config(local_data, **{"train.batch_size": 2})
    )
    fed = Federation.build(cfg)
    examples = [fed.data.train[i] for i in range(5)]  # micro-batches of 2, 2, 1
    clip = 1e-4
    singles = [_dp_gradient(fed, [e], clip) for e in examples]
    for g in singles:
        assert _norm(g) <= clip * (1 + 1e-4)
        assert _norm(g) > clip * 0.99  # tiny C: every example is clipped, to C
    batch = _dp_gradient(fed, examples, clip)
    for k, g in enumerate(batch):
        torch.testing.assert_close(g, sum(s[k] for s in singles), rtol=1e-4, atol=1e-10)


# -- central DP ---------------------------------------------------------------------------------
def _adapter(v: float, w: float) -> dict[str, torch.Tensor]:
    return {"a": torch.tensor([v, 0.0]), "b": torch.tensor([[0.0, w]])}


def _central(algorithm: str, clip: float, sigma: float = 0.0) -> CentralDP:
    inner = build_strategy(algorithm, {}, num_clients=4)
    s = CentralDP(inner, CentralDPConfig(noise_multiplier=sigma, clip_norm=clip), 3, 2, seed=0)
    s.initialize(_adapter(0.0, 0.0))
    return s


def test_central_dp_hand_computed_clipping() -> None:
    """Δ_1 = (3, 4) (norm 5) is scaled to norm 1: (0.6, 0.8); Δ_2 = (0.3, 0.4) (norm 0.5) is
    kept; equal weights (client sizes ignored): x = ((0.6 + 0.3)/2, (0.8 + 0.4)/2)."""
    s = _central("fedavg", clip=1.0)
    ups = [
        ClientUpdate(0, _adapter(3.0, 4.0), 1000),
        ClientUpdate(1, _adapter(0.3, 0.4), 1),
    ]
    s.aggregate(0, ups)
    torch.testing.assert_close(s.global_adapter["a"], torch.tensor([0.45, 0.0]))
    torch.testing.assert_close(s.global_adapter["b"], torch.tensor([[0.0, 0.6]]))
    assert s.last["clipped"] == 0.5
    assert s.last["update_norm_mean"] == pytest.approx(2.75)
    assert s.last["epsilon"] == math.inf  # σ = 0 gives no privacy, and says so


@pytest.mark.parametrize("algorithm", ["fedavg", "fedadam", "fedavgm"])
def test_central_dp_without_noise_and_large_clip_equals_wrapped(algorithm: str) -> None:
    plain = build_strategy(algorithm, {"weighted": False}, num_clients=4)
    plain.initialize(_adapter(0.0, 0.0))
    wrapped = _central(algorithm, clip=1e6)
    gen = torch.Generator().manual_seed(0)
    for rnd in range(3):
        ups = [
            ClientUpdate(c, _adapter(*torch.randn(2, generator=gen).tolist()), 10 * (c + 1))
            for c in range(2)
        ]
        plain.aggregate(rnd, ups)
        wrapped.aggregate(rnd, ups)
        for k in plain.global_adapter:
            torch.testing.assert_close(wrapped.global_adapter[k], plain.global_adapter[k])


def test_central_dp_noise_scale_and_accounting() -> None:
    """σ·C/|S| per coordinate: over many coordinates the sample std matches; ε equals Opacus'
    accountant stepped once per round at q = |S|/N."""
    inner = build_strategy("fedavg", {}, num_clients=8)
    s = CentralDP(inner, CentralDPConfig(noise_multiplier=1.5, clip_norm=0.2), 5, 4, seed=1)
    zero = {"w": torch.zeros(200_000)}
    s.initialize(zero)
    s.aggregate(0, [ClientUpdate(c, zero, 1) for c in range(4)])
    assert float(s.global_adapter["w"].std()) == pytest.approx(1.5 * 0.2 / 4, rel=0.01)
    acc = RDPAccountant()
    acc.step(noise_multiplier=1.5, sample_rate=0.5)
    assert s.last["epsilon"] == pytest.approx(acc.get_epsilon(delta=1 / 8), abs=1e-6)


def test_central_dp_adaptive_clip_moves_towards_quantile() -> None:
    """20 clients, count noise 1 (0.05 of the share): every update has norm 0.01, far below
    C = 1, so b̃ ≈ 1 and C shrinks by about exp(−0.2·0.5) a round until it nears 0.01."""
    inner = build_strategy("fedavg", {}, num_clients=20)
    cfg = CentralDPConfig(noise_multiplier=1.0, clip_norm=1.0, adaptive=True, count_noise=1.0)
    s = CentralDP(inner, cfg, 30, 20, seed=0)
    s.initialize(_adapter(0.0, 0.0))
    norms = []
    for rnd in range(30):
        s.aggregate(rnd, [ClientUpdate(c, _adapter(0.006, 0.008), 1) for c in range(20)])
        norms.append(s.clip_norm)
    assert norms[9] == pytest.approx(math.exp(-0.1 * 10), rel=0.1)
    assert 0.005 < norms[-1] < 0.1


# -- runs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["fedavg", "fedprox", "scaffold", "fedadam", "local"])
def test_client_dp_run_reports_epsilon_and_keeps_base(
    algorithm: str, local_data: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(
        local_data,
        privacy={"client_dp": {"noise_multiplier": 0.8, "max_grad_norm": 0.5}},
        **{"federation.algorithm": algorithm},
    )
    fed = Federation.build(cfg)
    before = {k: v.clone() for k, v in fed.model.state_dict().items() if "lora_" not in k}
    adapter0 = get_adapter_state(fed.model)
    run(cfg, tmp_path, federation=fed)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # each client's ε equals Opacus' accountant over the steps it took
    steps: dict[str, int] = {}
    for r in rows:
        for c in r["clients"]:
            steps[str(c)] = steps.get(str(c), 0) + cfg.train.local_steps
        assert set(r["epsilon"]) == {str(c) for c in r["clients"]}
    n = fed.data.client_sizes()
    for c, eps in rows[-1]["epsilon_by_client"].items():
        acc = RDPAccountant()
        for _ in range(steps[c]):
            acc.step(noise_multiplier=0.8, sample_rate=cfg.train.batch_size / n[int(c)])
        assert eps == pytest.approx(acc.get_epsilon(delta=1 / n[int(c)]), abs=1e-6)
    after = fed.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    changed = fed.strategy.eval_targets()
    assert any(update_norm(subtract(a, adapter0)) > 0 for a in changed.values()), (
        "no LoRA parameter changed"
    )


def test_budget_spent_client_stops_taking_part(local_data: Path, tmp_path: Path) -> None:
    """2 clients, 1 sampled per round, 4 rounds: σ is calibrated for the expected 2
    participations, so a client that took part twice has spent its budget, is retired with a
    message and is never sampled again; the run stops when no client can take part."""
    cfg = tiny_config(
        local_data,
        privacy={"client_dp": {"target_epsilon": 4.0, "calibrate_for": "expected"}},
        **{"federation.rounds": 4, "federation.sample_clients": 1, "eval.every": 0},
    )
    summary = run(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    taken: dict[int, int] = {}
    for r in rows:
        for c in r["clients"]:
            taken[c] = taken.get(c, 0) + 1
            assert taken[c] <= 2, f"client {c} trained after spending its budget"
        assert r["epsilon_max"] <= 4.0
    assert max(taken.values()) == 2
    assert summary["privacy"]["retired_clients"]
    assert summary["rounds_completed"] == len(rows) <= 4


# -- audit --------------------------------------------------------------------------------------
def test_canary_exposure_ranks_a_memorised_secret_first(local_data: Path) -> None:
    """Exposure is log2(|R|+1) − log2(rank): a model trained hard on one canary ranks its
    secret first (maximal exposure). Extraction reads the digits greedy decoding produces after
    the answer's lead (here from a stand-in model that answers a fixed continuation)."""
    from fedloom.privacy.audit import exposure, extracted, make_canaries, plant

    cfg = tiny_config(local_data, **{"train.lr": 5e-2, "lora.r": 8})
    fed = Federation.build(cfg)
    (canary,) = make_canaries(1, 4, seed=0)
    plant(fed, [canary], client=0, repeats=4)
    ex = fed.data.train[-1]
    fed.trainer.train([ex] * 2 * 40, 5e-2, steps=40)
    exp, rank = exposure(fed.model, fed.loaded.tokenizer, canary, 30, 96, fed.loaded.device, 0)
    assert rank == 1 and exp == pytest.approx(math.log2(31))

    tok = fed.loaded.tokenizer

    class Says:  # generate() returns the prompt followed by a fixed continuation
        def __init__(self, text: str) -> None:
            self.text = text

        def eval(self) -> Says:
            return self

        def generate(self, input_ids: torch.Tensor, **kw: object) -> torch.Tensor:
            more = tok(self.text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            return torch.cat([input_ids, more], dim=1)

    dev = fed.loaded.device
    assert extracted(Says(f" {canary.secret}."), tok, canary, dev)  # type: ignore[arg-type]
    assert not extracted(Says(" 0000."), tok, canary, dev)  # type: ignore[arg-type]
    assert not extracted(Says(f" {canary.secret[:-1]}."), tok, canary, dev)  # type: ignore[arg-type]


def test_audit_dp_lowers_exposure(local_data: Path, tmp_path: Path) -> None:
    """Fixed seed (and split): the same canaries, the same schedule; client DP-SGD (ε = 0.5)
    leaves them much less exposed than training without DP. Writes the table and the plot.
    (On tiny-llama the gap depends on the split: 20 copies of a secret in 56 examples are a
    group DP does not cover, and a near-uniform model ranks candidates by tiny differences;
    the SmolLM2 audit in the README is the measurement.)"""
    from fedloom.privacy.audit import default_settings, run_audit

    cfg = tiny_config(
        local_data,
        **{
            "train.lr": 5e-2,
            "train.local_steps": 10,
            "federation.rounds": 3,
            "eval.every": 0,
            "lora.r": 8,
        },
    )

    def audit() -> list[dict]:
        settings = default_settings([0.5], None, None)
        return run_audit(cfg, tmp_path, settings, canaries=2, repeats=20, digits=4, candidates=60)

    rows = audit()
    by = {r["setting"]: r for r in rows}
    base, plain, dp = by["base model (untrained)"], by["no DP"], by["client DP ε=0.5"]
    assert plain["exposure_mean"] > base["exposure_mean"] + 1.5  # training exposes the canaries
    assert dp["exposure_mean"] < plain["exposure_mean"] - 1.0  # DP-SGD hides them
    assert 0.45 < dp["epsilon"] <= 0.5
    table = (tmp_path / "audit.md").read_text()
    assert "| client DP ε=0.5 |" in table and (tmp_path / "audit.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert saved["meta"]["repeats"] == 20 and len(saved["rows"]) == 3
    # on the stage runner: a rerun skips the finished settings and reports the same rows
    assert sorted(p.parent.name for p in tmp_path.glob("*/done.json")) == [
        "client-DP-eps0.5",
        "no-DP",
    ]
    assert audit() == rows


def test_audit_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from fedloom.cli import main

    assert main(["audit", "configs/tiny.yaml", "--canaries", "0"]) == 2
    assert "--canaries must be >= 1" in capsys.readouterr().err
    assert main(["audit", "configs/tiny.yaml", "--central-clip", "-1"]) == 2
    assert "--central-clip > 0" in capsys.readouterr().err
