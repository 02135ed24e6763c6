"""Round wall time: the in-process engine vs a Flower deployment on loopback (a SuperLink and
one SuperNode per client as separate processes), same config, same seed.

    python benchmarks/engine_overhead.py                                   # tiny-llama
    python benchmarks/engine_overhead.py --config configs/demo.yaml --rounds 4 --interleave \
        --set eval.max_examples=4 --set partition.num_clients=2          # real SmolLM2
    python benchmarks/engine_overhead.py --config configs/demo.yaml --rounds 2 --repeats 2 \
        --set eval.max_examples=4                                        # sequential

Prints each round's wall time for both engines, their means and the ratio flower / in-process
(target <= 1.10 on a real-model round). A round's time is measured by the same round loop in
both engines (from sampling to the round's metrics row); start-up is reported separately.

This machine's speed drifts by 10-35% within minutes (the same 5 training steps, back to back,
alone: 30.1 s, then 41.3 s), more than the overhead being measured. Two designs:
  --interleave  each deployment and an in-process run at the same time, taking the machine in
                turns round by round (FEDLOOM_TURN_LOCK, benchmarks/turn_lock.py installed as a run hook: a run's
                build, baseline, every round and final evaluation each wait for the lock, and a
                round's time leaves the wait out). Both engines' rounds alternate under the same
                machine conditions and with the same processes resident, so drift cancels. The
                in-process rounds run while the deployment idles (its SuperLink and
                SuperNodes, at nice 19, and its clients keep polling: during a deployment
                round they took ~5% of a core besides the training client, measured), which
                if anything slows the in-process rounds. Both
                need memory at once: with SmolLM2, --set partition.num_clients=2 (~15 GB).
  sequential    (default) each engine alone in its own process, the in-process engine before
                and after each deployment (a b a; `--repeats N`: a b a b ... a), each deployment
                compared with the in-process runs on either side: drift between the runs stays
                in the ratio.
Both engines start warm: each `fedloom client` builds its model and runs a warm-up (two
training steps, undone) before the server starts, as a client that joins a federation ahead of
its first round, and the in-process run does the same warm-up before its first round.

The SuperNodes share this one machine; `--schedule` picks how they share its cores:
  turns     (default) they train one at a time, each with all cores (`fedloom client
            --train-lock FILE`): the in-process engine's schedule, so the ratio is what the
            deployment adds (Flower's messaging and processes), like for like;
  together  the sampled clients train at once, each with cores / clients-per-round threads
            (`fedloom client --threads`), as separate machines would.
What a Flower round adds: the server's messages wait for each SuperNode's next poll of the
SuperLink (every 3 s when idle: Flower's), the SuperNode stores the message and `fedloom client`
claims the task at once (it watches the SuperNode's log), and runs it in its own process, where
the model stays loaded; messages (15 MB of adapter each way for SmolLM2) cross the SuperLink and
the SuperNode; the SuperNode forwards a reply within 0.5 s and the server polls for replies
every 0.1-0.5 s. The output's "rest" is this part: round time minus training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from turn_lock import HOOK, TURN_ENV, turn

from fedloom.config import load_config
from fedloom.engine.hooks import HOOK_ENV
from fedloom.flower.deploy import free_port, stop_group
from fedloom.utils import available_cores

ROOT = Path(__file__).resolve().parents[1]


def rounds(out: Path, key: str = "seconds") -> list[float]:
    return [json.loads(x)[key] for x in (out / "metrics.jsonl").read_text().splitlines()]


def inprocess_child(cfg_path: str, out: str, after: str | None = None) -> None:
    """`--inprocess CFG OUT [--after FILE]`: (once FILE exists) build, warm up, run; the timings
    as JSON on the last line."""
    from fedloom.engine import run
    from fedloom.engine.inprocess import Federation

    cfg = load_config(cfg_path)
    while after is not None and not Path(after).exists():  # imports done: wait for the cue
        time.sleep(0.2)
    t0 = time.perf_counter()
    with turn():  # --interleave: in turn with the deployment's rounds
        fed = Federation.build(cfg)
        warm = fed.warm_up(0)  # as each `fedloom client` does before its first round
    run(cfg, out, federation=fed, turn=turn)
    print(json.dumps({"warm_up": warm, "job": time.perf_counter() - t0}))


def start_inprocess(
    cfg_path: Path, out: Path, env: dict[str, str] | None = None, after: Path | None = None
) -> subprocess.Popen[str]:
    cue = ["--after", str(after)] if after is not None else []
    return subprocess.Popen(
        [sys.executable, __file__, "--inprocess", str(cfg_path), str(out), *cue],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def finish_inprocess(proc: subprocess.Popen[str], out: Path) -> dict[str, float]:
    log, _ = proc.communicate()
    (out.parent / f"{out.name}.log").write_text(log)
    if proc.returncode != 0:
        raise SystemExit(f"the in-process run failed; see {out.parent}/{out.name}.log")
    return dict(json.loads(log.strip().splitlines()[-1]))


def inprocess(cfg_path: Path, out: Path) -> dict[str, float]:
    return finish_inprocess(start_inprocess(cfg_path, out), out)


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
    cfg_path: Path,
    out: Path,
    n_clients: int,
    client_args: list[str],
    server_env: dict[str, str] | None = None,
    alongside: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """The deployment: clients first (each builds and warms up), then the server (with
    ``server_env``; ``alongside()`` is called as it starts). Returns (seconds until the clients
    were ready, seconds the server took: SuperLink start, discovery, baseline evaluation, the
    rounds, final evaluation)."""
    port = free_port()
    fedloom = [sys.executable, "-m", "fedloom.cli"]
    logs = out.parent / f"{out.name}-logs"
    logs.mkdir()
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
            env=server_env,
        )
        if alongside is not None:
            alongside()
        if server.wait(timeout=3600) != 0:
            raise SystemExit(f"deployment failed; see {logs}/server.log")
        return ready, time.perf_counter() - t1
    finally:
        for p in [*([server] if server else []), *clients]:
            stop_group(p, grace=5)


def interleaved(
    cfg_path: Path,
    work: Path,
    k: int,
    n_clients: int,
    client_args: list[str],
    env: dict[str, str],
) -> tuple[tuple[float, float], dict[str, float]]:
    """Deployment k and in-process run k at once, both with ``env``'s turn lock. The in-process
    run starts with the server, after the clients are ready, and waits (imported) until the
    ServerApp has built its model and begun its run: from then on each side's work takes turns,
    and no round of either overlaps the other's start-up."""
    out = work / f"inprocess-{k}"
    procs: list[subprocess.Popen[str]] = []
    try:
        start = deploy(
            cfg_path,
            work / f"flower-{k}",
            n_clients,
            client_args,
            server_env=env,
            alongside=lambda: procs.append(
                start_inprocess(cfg_path, out, env, after=work / f"flower-{k}" / "config.yaml")
            ),
        )
    except BaseException:
        for p in procs:
            p.kill()
        raise
    return start, finish_inprocess(procs[0], out)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _split(runs: list[list[float]], train: list[list[float]]) -> tuple[float, float]:
    """Mean seconds per round in client training, and in the rest of the round."""
    t = [x for q in train for x in q]
    return _mean(t), _mean([x for r in runs for x in r]) - _mean(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--schedule", choices=["turns", "together"], default="turns")
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="deployments: each between two in-process runs (a b a b a ...), compared with the "
        "in-process runs on either side, as the machine's speed drifts; with --interleave, each "
        "beside its own in-process run",
    )
    ap.add_argument(
        "--interleave",
        action="store_true",
        help="run each deployment and an in-process run at the same time, taking the machine "
        "in turns round by round (FEDLOOM_TURN_LOCK): both engines' rounds are measured under "
        "the same machine conditions, minutes of drift cancel. Needs both in memory at once "
        "(SmolLM2: --set partition.num_clients=2)",
    )
    ap.add_argument("--inprocess", nargs=2, metavar=("CFG", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--after", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inprocess:
        inprocess_child(*args.inprocess, after=args.after)
        return
    if args.repeats < 1:
        raise SystemExit("--repeats: give 1 or more")
    over = [f"federation.rounds={args.rounds}", "eval.every=0", "eval.suites=[]", *args.overrides]
    cfg = load_config(args.config, over)
    work = Path(tempfile.mkdtemp(prefix="fedloom-overhead-"))
    cfg_path = work / "config.yaml"
    cfg.save(cfg_path)
    if args.schedule == "turns":  # one at a time, all cores each: as in-process
        client_args = ["--train-lock", str(work / "train.lock")]
        how = "clients train in turn, all cores each"
    else:  # the sampled clients train at once: share the cores between them
        threads = max(1, available_cores() // cfg.federation.sample_clients)
        client_args = ["--threads", str(threads)]
        how = f"sampled clients train at once, {threads} thread(s) each"

    starts: list[tuple[float, float]] = []
    jobs: list[dict[str, float]] = []
    if args.interleave:  # both engines at once, taking the machine in turns, round by round
        if cfg.partition.num_clients is None:
            raise SystemExit("--interleave needs a config with `partition.num_clients`")
        n_clients = cfg.partition.num_clients
        # the turn lock, installed as a run hook in every process the benchmark starts (the
        # deployment's ServerApp included): this folder on PYTHONPATH, the hook named
        here = str(Path(__file__).resolve().parent)
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ) | {
            TURN_ENV: str(work / "turn.lock"),
            HOOK_ENV: HOOK,
            "PYTHONPATH": path,
        }
        for k in range(1, args.repeats + 1):
            start, job = interleaved(cfg_path, work, k, n_clients, client_args, env)
            starts.append(start)
            jobs.append(job)
        runs_a = list(range(1, args.repeats + 1))
    else:
        jobs = [inprocess(cfg_path, work / "inprocess-0")]
        summary = json.loads((work / "inprocess-0" / "summary.json").read_text())
        n_clients = summary["num_clients"]
        for k in range(1, args.repeats + 1):
            starts.append(deploy(cfg_path, work / f"flower-{k}", n_clients, client_args))
            jobs.append(inprocess(cfg_path, work / f"inprocess-{k}"))
        runs_a = list(range(args.repeats + 1))

    a = [rounds(work / f"inprocess-{k}") for k in runs_a]
    ta = [rounds(work / f"inprocess-{k}", "client_train_seconds") for k in runs_a]
    b = [rounds(work / f"flower-{k}") for k in range(1, args.repeats + 1)]
    tb = [rounds(work / f"flower-{k}", "client_train_seconds") for k in range(1, args.repeats + 1)]
    print(
        f"\nmodel {cfg.model.name} · {cfg.federation.algorithm} · {n_clients} clients, "
        f"{cfg.federation.sample_clients} per round · {cfg.train.local_steps} local steps · "
        f"flower: {how}"
    )
    print("round s (training s: the round's client training, summed; the rest is the engine's)")
    for i, k in enumerate(runs_a):
        print(
            f"  in-process run {k}: "
            + ", ".join(f"{x:.2f} ({t:.2f})" for x, t in zip(a[i], ta[i], strict=True))
        )
        j = k - 1 if args.interleave else k  # the deployment printed after this run
        if 0 <= j < args.repeats:
            print(
                f"  flower run {j + 1}:     "
                + ", ".join(f"{x:.2f} ({t:.2f})" for x, t in zip(b[j], tb[j], strict=True))
            )
    if args.interleave:  # each deployment with the in-process run that took turns with it
        pairs = [_mean(b[k]) / _mean(a[k]) for k in range(args.repeats)]
    else:  # each deployment with the in-process runs before and after it
        pairs = [_mean(b[k]) / _mean(a[k] + a[k + 1]) for k in range(args.repeats)]
    all_a, all_b = [x for r in a for x in r], [x for r in b for x in r]
    train_a, rest_a = _split(a, ta)
    train_b, rest_b = _split(b, tb)
    ratio = _mean(all_b) / _mean(all_a)
    verdict = (
        f"target <= 1.10 on a real-model round: {'met' if ratio <= 1.10 else 'not met'}"
        if cfg.model.name != "tiny-llama"
        else "the target, <= 1.10, is for a real-model round: --config configs/demo.yaml"
    )
    print(
        f"mean round: in-process {_mean(all_a):.2f} s (training {train_a:.2f}, rest "
        f"{rest_a:.2f}), flower {_mean(all_b):.2f} s (training {train_b:.2f}, rest {rest_b:.2f})"
    )
    with_what = (
        "the in-process run that took turns with it"
        if args.interleave
        else ("the in-process runs on either side")
    )
    print(f"each deployment / {with_what}: " + ", ".join(f"{r:.3f}" for r in pairs))
    print(
        f"ratio flower / in-process = {ratio:.3f} ({verdict}); what the engine adds, outside "
        "training: "
        f"{rest_b - rest_a:.2f} s per round = {(rest_b - rest_a) / _mean(all_a):.1%} of an "
        f"in-process round"
    )
    print(
        "whole job: in-process "
        + " / ".join(f"{j['job']:.1f} s" for j in jobs)
        + f" (build, warm-up {jobs[0]['warm_up']:.1f} s, baseline, {len(a[0])} rounds, final "
        "evaluation); flower: clients built and warmed up in "
        + " / ".join(f"{r:.1f} s" for r, _ in starts)
        + ", then the server "
        + " / ".join(f"{t:.1f} s" for _, t in starts)
        + f" (SuperLink, discovery, baseline, {len(b[0])} rounds, final evaluation); files in "
        f"{work}"
    )


if __name__ == "__main__":
    main()
