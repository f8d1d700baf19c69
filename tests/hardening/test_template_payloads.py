"""Hostile templates: a payload appended to a copy of a shipped template is refused by the
guard in one line naming the rendered line and the template line, before anything compiles,
is imported or runs (each payload would create a marker file)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hardening_corpus import DATA

from codegen.build import build_state
from codegen.errors import CheckError
from codegen.render import TEMPLATE_DIR
from codegen.state import load_state
from codegen.toolchain import CompileSettings

REPO = Path(__file__).resolve().parents[2]
CASES: list[dict[str, Any]] = json.loads((DATA / "template_payloads.json").read_text())["cases"]
#: A shipped template whose module imports cython and numpy (payloads reach for both).
TARGET = "attention.py.j2"
MODULE = TARGET.removesuffix(".py.j2")


def test_corpus_covers_the_issue() -> None:
    ids = {case["id"] for case in CASES}
    assert len(CASES) >= 10
    assert {
        "getattr-builtins-import",
        "cimport-stdlib-system",
        "dunder-subclasses-walk",
        "importlib-dynamic-import",
        "getattr-computed-string",
        "lambda-default-arg-eval",
        "decorator-opens-file",
        "format-field-globals",
        "class-body-vars",
    } <= ids


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One render/check cache for every case (only the injected module renders anew)."""
    return tmp_path_factory.mktemp("payload-cache")


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_payload_is_refused_naming_the_template_line(
    case: dict[str, Any], tmp_path: Path, shared_cache: Path
) -> None:
    marker = tmp_path / "marker"
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    original = (templates / TARGET).read_text()
    first = len(original.splitlines()) + 2  # after the original's last line and a blank one
    payload = [
        line.replace("MARKER_REPR", repr(str(marker))).replace("MARKER", str(marker))
        for line in case["payload"]
    ]
    (templates / TARGET).write_text(original.rstrip("\n") + "\n\n" + "\n".join(payload) + "\n")
    generated = tmp_path / "generated"
    generated.mkdir()
    (generated / ".cache").symlink_to(shared_cache)
    state_path = REPO / "rsi_state.json"
    state = load_state(state_path)

    with pytest.raises(CheckError) as info:
        build_state(
            state, state_path.read_bytes(), CompileSettings(backend="python"), generated, templates
        )

    message = str(info.value)
    bad_line = first + case["bad_line"]
    assert "\n" not in message
    assert re.fullmatch(
        rf"{MODULE}\.py:\d+: generated code [^\[]+ "
        rf"\[from {re.escape(TARGET)}:{bad_line} `.+`, no state field on that line\]",
        message,
    ), message
    # Nothing was published, compiled, imported or run.
    assert not marker.exists()
    assert [p.name for p in generated.iterdir()] == [".cache"]
    assert not list(shared_cache.glob(f"*/{MODULE}.py"))
