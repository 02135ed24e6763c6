"""Generation jobs that survive being cut off: each prompt's result is appended to a JSONL file
as its batch completes, and a rerun skips the prompts already there (a killed job resumes
without redoing work). A batch that raises is recorded (``error``) and the job goes on."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedloom.errors import FedloomError
from fedloom.generation.base import GenerationConfig, Prompt, TextGenerator, sampling_of


class GenerationJobError(FedloomError, ValueError):
    """A job's output file or prompt ids are not usable."""


class GenerationStopped(FedloomError, RuntimeError):
    """A job stopped after too many prompts in a row failed (finished prompts are kept)."""


class IncompleteJob(FedloomError, RuntimeError):
    """A job finished with failed prompts: the stage that ran it is not done, and rerunning
    the same command retries only those prompts."""


def require_complete(report: JobReport, what: str, path: Path) -> None:
    """Raise :class:`IncompleteJob` when prompts of this job failed (a stage with failures is
    not done)."""
    if report.failed:
        raise IncompleteJob(
            f"{what}: {report.failed} prompts failed (last error: {report.last_error}); their "
            f"error rows are in {path}; rerun the same command to retry only them"
        )


@dataclass
class JobReport:
    done_before: int
    """Prompts already in the file (skipped)."""
    generated: int
    failed: int
    tokens: int
    seconds: float
    prompt_tokens: int = 0
    """Prompt tokens processed (prefill), counted once per prompt."""
    last_error: str = ""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def finished_ids(path: Path) -> set[str]:
    """Ids of the prompts the file holds a result for (a cut-off last line is ignored)."""
    if not path.exists():
        return set()
    done = set()
    for line in path.read_text(encoding="utf-8").split("\n"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a kill cut short: that prompt is generated again
        if isinstance(row, dict) and "id" in row and "error" not in row:
            done.add(str(row["id"]))
    return done


@dataclass
class JobResults:
    """What a job file holds for a set of prompts, each prompt counted once: its latest
    success if it has one, else its latest error."""

    ok: list[dict[str, Any]]
    """The latest successful row of each prompt (in the order prompts first appear)."""
    failed: dict[str, str]
    """Prompt id -> the error of its latest attempt, for prompts with no success."""
    foreign: int = 0
    """Rows of prompts outside the asked set (left from an earlier, different job)."""
    cut: int = 0
    """Lines a kill cut short (unreadable; that prompt is generated again)."""

    def texts(self) -> dict[str, str]:
        """{prompt id: first generation's text} of the successful prompts."""
        return {r["id"]: r["generations"][0]["text"] for r in self.ok if r.get("generations")}

    def summary(self) -> dict[str, int]:
        return {"ok": len(self.ok), "failed": len(self.failed), "foreign": self.foreign}


def read_job(path: str | Path, ids: Collection[str] | None = None) -> JobResults:
    """Read a job file back (the one reader every pipeline uses). A prompt retried after an
    error has both rows in the file: its success counts, its old error does not; a prompt that
    failed every time is one failure, however many attempts the file holds. With ``ids``, rows
    of other prompts are skipped (counted in ``foreign``)."""
    out = Path(path)
    want = None if ids is None else {str(i) for i in ids}
    latest_ok: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    first: dict[str, int] = {}  # prompt id -> the order its first row appeared in
    foreign = cut = 0
    if out.exists():
        for line in out.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                cut += 1
                continue
            if not isinstance(row, dict) or "id" not in row:
                cut += 1
                continue
            pid = str(row["id"])
            if want is not None and pid not in want:
                foreign += 1
                continue
            first.setdefault(pid, len(first))
            if "error" in row:
                errors[pid] = str(row["error"])
            else:
                latest_ok[pid] = row
    ok = sorted(latest_ok.values(), key=lambda r: first[str(r["id"])])
    failed = {pid: e for pid, e in errors.items() if pid not in latest_ok}
    return JobResults(ok, failed, foreign, cut)


def run_job(
    generator: TextGenerator,
    items: Sequence[tuple[str, Prompt]],
    cfg: GenerationConfig,
    path: str | Path,
    progress: bool = True,
) -> JobReport:
    """Generate ``cfg.n`` samples for each (id, prompt) not yet in ``path``; one JSON line per
    prompt: ``id``, ``prompt``, ``generations`` (text, tokens, finish_reason) and their provenance
    (``generator``, ``endpoint``: the server URL or None for a local model, ``sampling``: the
    settings and seed), or ``error`` when it failed (retried on the next run)."""
    out = Path(path)
    ids = [i for i, _ in items]
    if len(set(ids)) != len(ids):
        raise GenerationJobError(f"generation job {out}: prompt ids are not unique")
    done = finished_ids(out)
    todo = [(i, p) for i, p in items if i not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and out.stat().st_size and not out.read_bytes().endswith(b"\n"):
        with out.open("a", encoding="utf-8") as f:
            f.write("\n")  # end a line a kill cut short, so the next record starts clean
    report = JobReport(len(items) - len(todo), 0, 0, 0, 0.0)
    streak = 0  # prompts failed in a row (the circuit breaker)
    sampling = sampling_of(cfg)  # provenance, on every row
    t0 = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
    )
    with (
        Progress(
            *columns, TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), disable=not progress
        ) as bar,
        out.open("a", encoding="utf-8") as f,
    ):
        task = bar.add_task(f"generating ({generator.name})", total=len(todo), rate="")
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start : start + cfg.batch_size]
            try:
                results = generator.generate([p for _, p in chunk], cfg)
                rows: list[dict[str, Any]] = []
                for (i, p), gens in zip(chunk, results, strict=True):
                    errors = [g.error for g in gens if g.error]
                    if errors:  # the backend gave up on this prompt: retried on the next run
                        rows.append({"id": i, "prompt": p, "error": errors[0]})
                        report.failed += 1
                        continue
                    rows.append(
                        {
                            "id": i,
                            "prompt": p,
                            "generations": [
                                {k: v for k, v in asdict(g).items() if k != "error"} for g in gens
                            ],
                            "generator": generator.name,
                            "endpoint": generator.endpoint,
                            "sampling": sampling,
                        }
                    )
                    report.generated += 1
                    report.tokens += sum(g.tokens for g in gens)
                    report.prompt_tokens += gens[0].prompt_tokens if gens else 0
            except Exception as e:  # noqa: BLE001  (recorded, not fatal: the job goes on)
                rows = [
                    {"id": i, "prompt": p, "error": f"{type(e).__name__}: {e}"[:500]}
                    for i, p in chunk
                ]
                report.failed += len(chunk)
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                if "error" in row:
                    streak, report.last_error = streak + 1, str(row["error"])
                else:
                    streak = 0
            f.flush()
            report.seconds = time.perf_counter() - t0
            bar.update(task, advance=len(chunk), rate=f"{report.tokens_per_second:.1f} tok/s")
            if cfg.max_consecutive_failures and streak >= cfg.max_consecutive_failures:
                raise GenerationStopped(
                    f"generation stopped: {streak} prompts in a row failed ({generator.name}; "
                    f"last error: {report.last_error}); the {report.generated} finished this "
                    f"run are kept in {out}: fix the generator or its endpoint and rerun"
                )
    report.seconds = time.perf_counter() - t0
    return report


def run_complete(
    generator: TextGenerator,
    items: Sequence[tuple[str, Prompt]],
    cfg: GenerationConfig,
    path: str | Path,
    progress: bool = True,
) -> JobReport:
    """:func:`run_job` for a pipeline stage: a job that ends with failed prompts raises
    :class:`IncompleteJob` (the stage is not marked done; rerunning the same command retries
    only the failed prompts). A dead endpoint stops it early (:class:`GenerationStopped`)."""
    report = run_job(generator, items, cfg, path, progress)
    out = Path(path)
    require_complete(report, f"{out.parent.name}/{out.name}", out)
    return report
