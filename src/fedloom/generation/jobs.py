"""Generation jobs that survive being cut off: each prompt's result is appended to a JSONL file
as its batch completes, and a rerun skips the prompts already there (a killed job resumes
without redoing work). A batch that raises is recorded (``error``) and the job goes on."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedloom.errors import FedloomError
from fedloom.generation.base import GenerationConfig, Prompt, TextGenerator


class GenerationJobError(FedloomError, ValueError):
    """A job's output file or prompt ids are not usable."""


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


def run_job(
    generator: TextGenerator,
    items: Sequence[tuple[str, Prompt]],
    cfg: GenerationConfig,
    path: str | Path,
    progress: bool = True,
) -> JobReport:
    """Generate ``cfg.n`` samples for each (id, prompt) not yet in ``path``; one JSON line per
    prompt: ``id``, ``prompt``, ``generations`` (text, tokens, finish_reason), ``generator``,
    or ``error`` when its batch failed (retried on the next run)."""
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
                rows = []
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
            f.flush()
            report.seconds = time.perf_counter() - t0
            bar.update(task, advance=len(chunk), rate=f"{report.tokens_per_second:.1f} tok/s")
    report.seconds = time.perf_counter() - t0
    return report
