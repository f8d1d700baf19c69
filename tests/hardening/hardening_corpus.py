"""The hostile state corpus (``data/hostile_states.json``): load it and put a case on disk.

A case starts from the corpus's valid ``base`` state and changes it one way: ``set`` values
at JSON paths, ``delete`` paths, ``text`` replacements on the serialized file (for what JSON
values cannot express: NaN, duplicate keys, garbage), a ``raw`` or ``raw_hex`` file, a
``generate``d oversized or broken file, or an ``fs`` object that is not a regular file.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["CORPUS_PATH", "TEMPLATES", "load_corpus", "serialize", "case_bytes", "put_case"]

DATA = Path(__file__).with_name("data")
CORPUS_PATH = DATA / "hostile_states.json"
TEMPLATES = DATA / "templates"


def load_corpus() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(base state, cases)``."""
    corpus = json.loads(CORPUS_PATH.read_text())
    return corpus["base"], corpus["cases"]


def serialize(state: dict[str, Any]) -> bytes:
    """A state as the user would write it."""
    return (json.dumps(state, indent=2) + "\n").encode()


def _set(doc: Any, path: list[Any], value: Any) -> None:
    *parents, leaf = path
    for part in parents:
        doc = doc[part]
    doc[leaf] = value


def _generated(kind: str, base: dict[str, Any]) -> bytes:
    doc = copy.deepcopy(base)
    text = serialize(base)
    if kind == "deep":
        doc["benchmark"] = {"per_task": json.loads("[" * 40 + "]" * 40)}
    elif kind == "huge":
        doc["answer_vocabulary"] = ["w" + "x" * 30] * 40_000  # > 1 MiB
    elif kind == "many_experts":
        doc["experts"] = {f"e{i}": {"kind": "tracking", "weight": 1.0} for i in range(65)}
        doc["routing"] = []
    elif kind == "many_rules":
        doc["routing"] = [{"when_all": ["afraid"], "boosts": {"deducer": 1.0}}] * 257
    elif kind == "many_vocabulary":
        doc["answer_vocabulary"] = [f"w{i}" for i in range(513)]
    elif kind == "many_boosts":
        doc["experts"] = {f"e{i}": {"kind": "tracking", "weight": 1.0} for i in range(17)}
        doc["routing"] = [{"when_all": ["afraid"], "boosts": {f"e{i}": 1.0 for i in range(17)}}]
    elif kind == "many_associations":
        doc["associations"] = [{"cue": "hungry", "answer": "kitchen"}] * 257
    elif kind == "truncated_half":
        return text[: len(text) // 2]
    elif kind == "truncated_string":
        return text[: text.index(b'"tracker"') + 4]
    elif kind == "utf16":
        return text.decode().encode("utf-16")
    elif kind == "bom":
        return b"\xef\xbb\xbf" + text
    else:
        raise ValueError(f"unknown generator {kind!r}")
    return serialize(doc)


def case_bytes(case: dict[str, Any], base: dict[str, Any]) -> bytes | None:
    """The file content of a content case; None for a filesystem case."""
    if "fs" in case:
        return None
    if "raw" in case:
        return str(case["raw"]).encode()
    if "raw_hex" in case:
        return bytes.fromhex(case["raw_hex"])
    if "generate" in case:
        return _generated(case["generate"], base)
    doc = copy.deepcopy(base)
    for path, value in case.get("set", []):
        _set(doc, path, value)
    for path in case.get("delete", []):
        *parents, leaf = path
        target = doc
        for part in parents:
            target = target[part]
        del target[leaf]
    text = serialize(doc).decode()
    for old, new in case.get("text", []):
        if old == "$END":
            text = text.rstrip("\n") + new + "\n"
            continue
        assert old in text, f"{case['id']}: {old!r} not in the base state"
        text = text.replace(old, new, 1)
    return text.encode()


def put_case(case: dict[str, Any], base: dict[str, Any], state_path: Path) -> bytes | None:
    """Replace ``state_path`` with the case; return the bytes written (None for fs cases).

    ``symlink`` points at a valid state elsewhere: refused even though its target is fine.
    """
    if state_path.is_dir() and not state_path.is_symlink():
        state_path.rmdir()
    else:
        state_path.unlink(missing_ok=True)
    data = case_bytes(case, base)
    if data is not None:
        state_path.write_bytes(data)
        return data
    kind = case["fs"]
    if kind == "directory":
        state_path.mkdir()
    elif kind == "symlink":
        target = state_path.parent / "elsewhere.json"
        target.write_bytes(serialize({**base, "version": 99}))
        state_path.symlink_to(target)
    elif kind == "symlink_passwd":
        state_path.symlink_to("/etc/passwd")
    elif kind == "fifo":
        os.mkfifo(state_path)
    elif kind == "missing":
        pass
    else:
        raise ValueError(f"unknown fs case {kind!r}")
    return None


def _update_expected_errors() -> None:
    """Rewrite every case's ``error`` with today's message (review the diff before committing!).

    For after an intended schema change: ``PYTHONPATH=. .venv/bin/python
    tests/hardening/hardening_corpus.py --update``. Refuses to record an accepted case.
    """
    import tempfile

    from codegen.errors import StateError
    from codegen.state import load_state

    corpus = json.loads(CORPUS_PATH.read_text())
    path = Path(tempfile.mkdtemp()) / "rsi_state.json"
    path.write_bytes(serialize(corpus["base"]))
    load_state(path)  # the base itself must be valid
    for case in corpus["cases"]:
        put_case(case, corpus["base"], path)
        try:
            load_state(path)
        except StateError as exc:
            case["error"] = str(exc).replace(str(path), "{path}")
        else:
            raise SystemExit(f"case {case['id']} is accepted: fix the case or the schema")
    CORPUS_PATH.write_text(json.dumps(corpus, indent=1, ensure_ascii=True) + "\n")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--update"]:
        _update_expected_errors()
