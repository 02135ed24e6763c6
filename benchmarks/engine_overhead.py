"""Round wall time: the in-process engine vs a Flower deployment on loopback (a SuperLink and
one SuperNode per client as separate processes), same config, same seed.

    python benchmarks/engine_overhead.py                                   # tiny-llama
    python benchmarks/engine_overhead.py --config configs/demo.yaml --rounds 3   # real SmolLM2

Prints each round's wall time for both engines, their means and the ratio flower / in-process
(target <= 1.10 on a real-model round). A round's time is measured by the same round loop in
both engines (from sampling to the round's metrics row); start-up is reported separately.

Each engine runs in its own process, so neither holds the other's memory. By default the
in-process engine runs before and after the deployment (`--order aba`) and its rounds are
averaged: this machine's speed drifts by 10-20% within minutes, and a single before/after pair
would measure the drift. Both engines start warm: each `fedloom client` builds its model and
runs one warm-up step before the server starts (as a client that joins a federation ahead of
its first round), and the in-process run does the same warm-up step before its first round.

The SuperNodes share this one machine; `--schedule` picks how they share its cores:
  turns     (default) they train one at a time, each with all cores (`fedloom client
            --train-lock FILE`): the in-process engine's schedule, so the ratio is what the
            deployment adds (Flower's messaging and processes), like for like;
  together  the sampled clients train at once, each with cores / clients-per-round threads
            (`fedloom client --threads`), as separate machines would.
What a Flower round adds: the SuperNode polls the SuperLink every 3 s when idle, `fedloom
client` polls its SuperNode for tasks every second (Flower's SuperExec default) and runs each
in its own process, where the model stays loaded; messages (15 MB of adapter each way for
SmolLM2) cross the SuperLink and the SuperNode; the server polls for replies.
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
from fedloom.flower.deploy import free_port, stop_group
from fedloom.utils import available_cores

ROOT = Path(__file__).resolve().parents[1]


def rounds(out: Path, key: str = "seconds") -> list[float]:
    return [json.loads(x)[key] for x in (out / "metrics.jsonl").read_text().splitlines()]


def inprocess_child(cfg_path: str, out: str) -> None:
    """`--inprocess CFG OUT`: build, warm up, run; the timings as JSON on the last line."""
    from fedloom.engine import run
    from fedloom.engine.inprocess import Federation

    cfg = load_config(cfg_path)
    t0 = time.perf_counter()
    fed = Federation.build(cfg)
    warm = fed.warm_up(0)  # as each `fedloom client` does before its first round
    run(cfg, out, federation=fed)
    print(json.dumps({"warm_up": warm, "job": time.perf_counter() - t0}))


def inprocess(cfg_path: Path, out: Path) -> dict[str, float]:
    res = subprocess.run(
        [sys.executable, __file__, "--inprocess", str(cfg_path), str(out)],
        capture_output=True,
        text=True,
    )
    (out.parent / f"{out.name}.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise SystemExit(f"the in-process run failed; see {out.parent}/{out.name}.log")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def _wait_ready(logs: list[Path], procs: list[subprocess.Popen[bytes]], timeout: float) -> float:
    """Until every `fedloom client` has built and warmed up its model (its log says so)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"a fedloom client exited at start; see {logs[0].parent}")
        if all(log.exists() and "warmed up" in log.read_text() for log in logs):
            return time.perf_counter() - t0
        time.sleep(0.5)
    raise SystemExit(f"the clients were not ready within {timeout:.0f} s; see {logs[0].parent}")


def deploy(
    cfg_path: Path, out: Path, n_clients: int, client_args: list[str]
) -> tuple[float, float]:
    """The deployment: clients first (each builds and warms up), then the server. Returns
    (seconds until the clients were ready, seconds the server took: SuperLink start,
    discovery, baseline evaluation, the rounds, final evaluation)."""
    port = free_port()
    fedloom = [sys.executable, "-m", "fedloom.cli"]
    logs = out.parent
    client_logs = [logs / f"client{i}.log" for i in range(n_clients)]
    clients = [
        subprocess.Popen(
            [*fedloom, "client", str(cfg_path), "--client-id", str(i)]
            + ["--server", f"127.0.0.1:{port}", *client_args],
            stdout=open(client_logs[i], "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for i in range(n_clients)
    ]
    server = None
    try:
        ready = _wait_ready(client_logs, clients, timeout=900)
        t1 = time.perf_counter()
        server = subprocess.Popen(
            [*fedloom, "server", str(cfg_path), "--address", f"127.0.0.1:{port}"]
            + ["--out", str(out)],
            stdout=open(logs / "server.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if server.wait(timeout=3600) != 0:
            raise SystemExit(f"deployment failed; see {logs}/server.log")
        return ready, time.perf_counter() - t1
    finally:
        for p in [*([server] if server else []), *clients]:
            stop_group(p, grace=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--schedule", choices=["turns", "together"], default="turns")
    ap.add_argument(
        "--order",
        choices=["aba", "ab"],
        default="aba",
        help="aba: in-process, flower, in-process (averages out the machine's drift); ab: once",
    )
    ap.add_argument("--inprocess", nargs=2, metavar=("CFG", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inprocess:
        inprocess_child(*args.inprocess)
        return
    over = [f"federation.rounds={args.rounds}", "eval.every=0", "eval.suites=[]", *args.overrides]
    cfg = load_config(args.config, over)
    work = Path(tempfile.mkdtemp(prefix="fedloom-overhead-"))
    cfg_path = work / "config.yaml"
    cfg.save(cfg_path)

    jobs = [inprocess(cfg_path, work / "inprocess")]
    summary = json.loads((work / "inprocess" / "summary.json").read_text())
    n_clients = summary["num_clients"]
    if args.schedule == "turns":  # one at a time, all cores each: as in-process
        client_args = ["--train-lock", str(work / "train.lock")]
        how = "clients train in turn, all cores each"
    else:  # the sampled clients train at once: share the cores between them
        threads = max(1, available_cores() // cfg.federation.sample_clients)
        client_args = ["--threads", str(threads)]
        how = f"sampled clients train at once, {threads} thread(s) each"
    ready, t_fl = deploy(cfg_path, work / "flower", n_clients, client_args)
    outs = [work / "inprocess"]
    if args.order == "aba":
        jobs.append(inprocess(cfg_path, work / "inprocess-after"))
        outs.append(work / "inprocess-after")

    runs_a = [rounds(o) for o in outs]
    a = [sum(r[i] for r in runs_a) / len(runs_a) for i in range(len(runs_a[0]))]
    ta = [
        sum(t[i] for t in (rounds(o, "client_train_seconds") for o in outs)) / len(outs)
        for i in range(len(a))
    ]
    b = rounds(work / "flower")
    tb = rounds(work / "flower", "client_train_seconds")
    print(
        f"\nmodel {cfg.model.name} · {cfg.federation.algorithm} · {n_clients} clients, "
        f"{cfg.federation.sample_clients} per round · {cfg.train.local_steps} local steps · "
        f"flower: {how}"
    )
    print("(training s: the clients' local training summed; in-process they run one after another)")
    if len(outs) > 1:
        print(
            "in-process rounds before / after the deployment: "
            + "; ".join(f"{x:.2f} / {y:.2f}" for x, y in zip(*runs_a, strict=True))
            + " s (their mean below)"
        )
    print(
        f"{'round':>5} {'in-process s':>13} {'training s':>11} {'flower s':>10} {'training s':>11}"
    )
    for i, (x, y) in enumerate(zip(a, b, strict=True), 1):
        print(f"{i:>5} {x:>13.2f} {ta[i - 1]:>11.2f} {y:>10.2f} {tb[i - 1]:>11.2f}")
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    ratio = mean_b / mean_a
    print(f"{'mean':>5} {mean_a:>13.2f} {sum(ta) / len(ta):>11.2f} {mean_b:>10.2f}", end="")
    print(f" {sum(tb) / len(tb):>11.2f}")
    print(
        f"ratio flower / in-process = {ratio:.3f} (target <= 1.10 on a real-model round: "
        f"{'met' if ratio <= 1.10 else 'not met'})"
    )
    print(
        "whole job: in-process "
        + " / ".join(f"{j['job']:.1f} s" for j in jobs)
        + f" (build, warm-up {jobs[0]['warm_up']:.1f} s, baseline, {len(a)} rounds, final "
        f"evaluation); flower: clients built and warmed up in {ready:.1f} s, then the server "
        f"{t_fl:.1f} s (SuperLink, discovery, baseline, {len(b)} rounds, final evaluation); "
        f"files in {work}"
    )


if __name__ == "__main__":
    main()
