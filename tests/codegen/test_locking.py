"""Path conventions beside a state file: reserved names and where rejected candidates go."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen.errors import StateError, StorageError
from codegen.locking import check_state_path, rejected_path
from runtime.project import Project
from runtime.promote import keep_rejected


@pytest.mark.parametrize(
    ("state", "kept"),
    [
        ("rsi_state.json", "rsi_state.rejected.json"),
        ("m.json", "m.rejected.json"),
        ("m.txt", "m.txt.rejected.json"),  # not m.rejected.json, which m.json's would be
        ("m", "m.rejected.json"),
    ],
)
def test_each_state_file_has_its_own_rejected_file(state: str, kept: str) -> None:
    assert rejected_path(Path("/p") / state) == Path("/p") / kept


def test_a_rejected_file_is_refused_as_a_state_file(tmp_path: Path) -> None:
    path = tmp_path / "m.rejected.json"
    path.write_text("{}")
    with pytest.raises(StateError) as caught:
        check_state_path(path, must_exist=True)
    assert str(caught.value) == (
        "m.rejected.json: a name rsi keeps for rejected candidates (the next rejection would "
        "overwrite it); copy it to another name to use it as a state file"
    )


def test_a_rejected_file_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    state = tmp_path / "rsi_state.json"
    state.write_text("{}")
    (tmp_path / "rsi_state.rejected.json").mkdir()
    with pytest.raises(StorageError) as caught:
        keep_rejected(state, b"{}")
    assert str(caught.value) == (
        "rsi_state.rejected.json: cannot keep the rejected candidate there (Is a directory); "
        "it is in the ledger: rsi history --candidate N -o FILE"
    )


def test_recover_removes_a_half_written_rejected_file(tmp_path: Path) -> None:
    state = tmp_path / "rsi_state.json"
    state.write_text("{}")
    torn = tmp_path / ".rsi_state.rejected.json.x1y2.tmp"
    torn.write_text("half")
    Project(state).recover()
    assert not torn.exists()
