"""Round wall time: the in-process engine vs a Flower deployment on loopback (a SuperLink and
one SuperNode per client as separate processes), same config, same seed.

    python benchmarks/engine_overhead.py                                   # tiny-llama
    python benchmarks/engine_overhead.py --config configs/demo.yaml --rounds 2   # real SmolLM2

Prints each round's wall time for both engines, their means and the ratio flower / in-process
(target <= 1.10 on a real-model round). A round's time is measured by the same round loop in
both engines (from sampling to the round's metrics row); the deployment's start-up (SuperLink,
SuperNodes, the first query) is reported separately.

The SuperNodes share this one machine; `--schedule` picks how they share its cores:
  turns     (default) they train one at a time, each with all cores (`fedloom client
            --train-lock FILE`): the in-process engine's schedule, so the ratio is what the
            deployment adds (Flower's messaging and processes), like for like;
  together  the sampled clients train at once, each with cores / clients-per-round threads
            (`fedloom client --threads`), as separate machines would.
Each `fedloom client` keeps its model loaded between rounds (its training worker); what a
Flower round adds is Flower's own latency: the SuperNode polls the SuperLink every 3 s when
idle, its SuperExec polls for work every second, a fresh `flwr-clientapp` process (~2.5 s to
start) relays each message to the worker, replies are polled every 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedloom.config import load_config
from fedloom.engine import run
from fedloom.flower.deploy import free_port, stop_group
from fedloom.utils import available_cores

ROOT = Path(__file__).resolve().parents[1]


def rounds(out: Path, key: str = "seconds") -> list[float]:
    return [json.loads(x)[key] for x in (out / "metrics.jsonl").read_text().splitlines()]


def deploy(cfg_path: Path, out: Path, n_clients: int, client_args: list[str]) -> float:
    port = free_port()
    fedloom = [sys.executable, "-m", "fedloom.cli"]
    logs = out.parent
    t0 = time.perf_counter()
    server = subprocess.Popen(
        [*fedloom, "server", str(cfg_path), "--address", f"127.0.0.1:{port}", "--out", str(out)],
        stdout=open(logs / "server.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    clients = [
        subprocess.Popen(
            [
                *fedloom,
                "client",
                str(cfg_path),
                "--client-id",
                str(i),
                "--server",
                f"127.0.0.1:{port}",
                *client_args,
            ],
            stdout=open(logs / f"client{i}.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for i in range(n_clients)
    ]
    try:
        if server.wait(timeout=3600) != 0:
            raise SystemExit(f"deployment failed; see {logs}/server.log")
    finally:
        for p in [server, *clients]:
            stop_group(p, grace=5)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--schedule", choices=["turns", "together"], default="turns")
    args = ap.parse_args()
    over = [f"federation.rounds={args.rounds}", "eval.every=0", "eval.suites=[]", *args.overrides]
    cfg = load_config(args.config, over)
    work = Path(tempfile.mkdtemp(prefix="fedloom-overhead-"))
    cfg_path = work / "config.yaml"
    cfg.save(cfg_path)

    t0 = time.perf_counter()
    summary = run(cfg, work / "inprocess")
    t_in = time.perf_counter() - t0
    n_clients = summary["num_clients"]
    if args.schedule == "turns":  # one at a time, all cores each: as in-process
        client_args = ["--train-lock", str(work / "train.lock")]
        how = "clients train in turn, all cores each"
    else:  # the sampled clients train at once: share the cores between them
        threads = max(1, available_cores() // cfg.federation.sample_clients)
        client_args = ["--threads", str(threads)]
        how = f"sampled clients train at once, {threads} thread(s) each"
    t_fl = deploy(cfg_path, work / "flower", n_clients, client_args)

    a, b = rounds(work / "inprocess"), rounds(work / "flower")
    ta = rounds(work / "inprocess", "client_train_seconds")
    tb = rounds(work / "flower", "client_train_seconds")
    print(
        f"\nmodel {cfg.model.name} · {cfg.federation.algorithm} · {n_clients} clients, "
        f"{cfg.federation.sample_clients} per round · {cfg.train.local_steps} local steps · "
        f"flower: {how}"
    )
    print("(training s: the clients' local training summed; in-process they run one after another)")
    print(
        f"{'round':>5} {'in-process s':>13} {'training s':>11} {'flower s':>10} {'training s':>11}"
    )
    for i, (x, y) in enumerate(zip(a, b, strict=True), 1):
        print(f"{i:>5} {x:>13.2f} {ta[i - 1]:>11.2f} {y:>10.2f} {tb[i - 1]:>11.2f}")
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    ratio = mean_b / mean_a
    print(f"{'mean':>5} {mean_a:>13.2f} {mean_b:>10.2f}")
    print(
        f"ratio flower / in-process = {ratio:.3f} (target <= 1.10 on a real-model round: "
        f"{'met' if ratio <= 1.10 else 'not met'})"
    )
    print(
        f"whole job: in-process {t_in:.1f} s, flower deployment {t_fl:.1f} s "
        f"(incl. SuperLink/SuperNode start and {len(b)} rounds); files in {work}"
    )


if __name__ == "__main__":
    main()
