"""The de-quantised model cache: one entry per GGUF *content* (a copy of the file elsewhere, as
in another checkout, reuses it), and two processes asking for it at once build it once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from fedloom.models.registry import SMOLLM2_GGUF

ASK = """
import sys
from pathlib import Path
from fedloom.models.loader import _gguf_cache
print(_gguf_cache(Path(sys.argv[1]), "tokenizer"))
"""


def _ask(gguf: Path, cache: Path) -> subprocess.Popen[str]:
    env = os.environ | {"FEDLOOM_CACHE": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-c", ASK, str(gguf)], env=env, stdout=subprocess.PIPE, text=True
    )


def test_cache_is_keyed_by_content_and_built_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    original = SMOLLM2_GGUF()
    copy = tmp_path / "elsewhere" / original.name
    copy.parent.mkdir()
    shutil.copy(original, copy)
    procs = [_ask(original, cache), _ask(copy, cache)]  # at the same time
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]  # one entry for the same content, whichever path asked
    entries = [p for p in (cache / "models").iterdir() if not p.name.endswith(".lock")]
    assert [p.name for p in entries] == [Path(outs[0]).name]  # no second copy, no temp left
    assert (Path(outs[0]) / "tokenizer_config.json").exists()
    # a file whose content differs gets its own entry
    with open(copy, "ab") as f:
        f.write(b"\0")
    changed = _ask(copy, cache).communicate(timeout=300)[0].strip()
    assert changed != outs[0]
