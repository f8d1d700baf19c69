"""Issue 9: history, rollback and state paths hold against careless and hostile use.

Items 1 (state files sharing a directory), 2 (uncommitted edits), 3 (default rollback
target and pruning), 5 (tampered ledger records), 7 (a committed version rebuilt with other
templates), 8 (symlinked and directory state paths), 9 (one-line errors) and 10 (compile
workers and mypy temp dirs outlive a killed command).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from codegen.check import MYPY_TMP_PREFIX, remove_stale_mypy_dirs
from codegen.errors import LedgerError, LockTimeout, StateError
from codegen.fsutil import atomic_write
from codegen.locking import builds_lock
from codegen.state import RSIState
from codegen.toolchain import CompileSettings, cc_command, toolchain_fingerprint
from runtime.cli import main
from runtime.ledger import ledger_path
from runtime.project import Project
from tests.conftest import PROBE_TEMPLATES, REPO, edit_state

PY = CompileSettings(backend="python")


def _sibling(project: Project, name: str, **changes: object) -> Project:
    """A second state file in ``project``'s directory (a copy with ``changes``)."""
    data = json.loads(project.state_path.read_text())
    data.update(changes)
    path = project.state_path.with_name(name)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return Project(path, template_dir=project.template_dir)


_BUILD = """
import sys
from pathlib import Path
from codegen.toolchain import CompileSettings
from runtime.project import Project
Project(Path(sys.argv[1]), template_dir=Path(sys.argv[2])).build(CompileSettings(backend="python"))
"""


class TestTwoStateFilesInOneDirectory:
    """Item 1: each state file is an independent project."""

    def test_rollback_never_restores_the_other_files_bytes(
        self, make_project: Callable[..., Project]
    ) -> None:
        a = make_project()
        a.build(PY)
        b = _sibling(
            a,
            "kernels.json",
            scoring={**json.loads(a.state_path.read_text())["scoring"], "rag": 7.0},
        )
        b_bytes = b.state_path.read_bytes()
        b.build(PY)
        assert a.ledger.path != b.ledger.path
        assert b.ledger.path == ledger_path(b.state_path)
        with pytest.raises(
            LedgerError,
            match=r"^nothing to roll back to: no other version was live before the active 1 "
            r"\(history \[1\]; use --to VERSION\)$",
        ):
            b.rollback()
        assert b.state_path.read_bytes() == b_bytes
        assert a.status().history == b.status().history == [1]

    def test_concurrent_builds_of_two_files_keep_both_commits(
        self, make_project: Callable[..., Project]
    ) -> None:
        a = make_project()
        b = _sibling(
            a, "b.json", scoring={**json.loads(a.state_path.read_text())["scoring"], "rag": 0.123}
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _BUILD, str(p.state_path), str(PROBE_TEMPLATES)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for p in (a, b)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        for project in (a, b):
            record = project.ledger.state(1)
            assert record.data == project.state_path.read_bytes()
            active = project.ledger.active()
            assert active is not None and active.build_id == record.build_id

    def test_gc_keeps_the_builds_another_state_file_uses(
        self, make_project: Callable[..., Project]
    ) -> None:
        a = make_project()
        a.build(PY)
        b = _sibling(
            a, "b.json", scoring={**json.loads(a.state_path.read_text())["scoring"], "rag": 6.0}
        )
        b_build = b.build(PY).build_id
        assert b_build not in a.ledger.builds_in_use()
        a.gc()
        assert (b.generated_dir / b_build / "manifest.json").is_file()
        b.load_active()

    def test_gc_waits_for_a_build_of_another_state_file(
        self, make_project: Callable[..., Project]
    ) -> None:
        a = make_project()
        a.build(PY)
        b = _sibling(a, "b.json")
        quick = Project(a.state_path, template_dir=a.template_dir, lock_timeout_s=0.2)
        with builds_lock(b.state_path, exclusive=False):  # b has published, not committed
            with pytest.raises(LockTimeout, match=r"^builds.lock: held by another process; "):
                quick.gc()
        quick.gc()


class TestUncommittedEdit:
    """Item 2: rollback keeps the user's uncommitted content and the file's mode."""

    def test_rollback_keeps_the_edit_and_the_mode(
        self, make_project: Callable[..., Project]
    ) -> None:
        project = make_project()
        project.build(PY)
        v1 = project.state_path.read_bytes()
        edit_state(project, version=2, scoring__rag=2.5)
        project.build(PY)
        edit = edit_state(project, version=3, scoring__rag=9.5)  # not built, not committed
        project.state_path.chmod(0o640)
        report = project.rollback()
        assert project.state_path.read_bytes() == v1
        assert stat.S_IMODE(project.state_path.stat().st_mode) == 0o640
        assert report.kept_uncommitted is not None
        kept = Path(report.kept_uncommitted)
        assert kept.parent == project.state_path.parent
        assert kept.name.startswith("rsi_state.uncommitted-") and kept.suffix == ".json"
        assert kept.read_bytes() == edit
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640

    def test_committed_content_is_not_copied(self, make_project: Callable[..., Project]) -> None:
        project = make_project()
        project.build(PY)
        edit_state(project, version=2, scoring__rag=2.5)
        project.build(PY)
        assert project.rollback().kept_uncommitted is None
        assert not list(project.state_path.parent.glob("*.uncommitted-*"))

    def test_atomic_write_keeps_the_mode(self, tmp_path: Path) -> None:
        path = tmp_path / "s.json"
        path.write_bytes(b"old")
        path.chmod(0o664)
        atomic_write(path, b"new")
        assert path.read_bytes() == b"new"
        assert stat.S_IMODE(path.stat().st_mode) == 0o664


class TestDefaultRollbackTarget:
    """Item 3: the default rollback restores what was live before, and pruning keeps it."""

    def test_rollback_after_a_rollback_and_a_commit(
        self, make_project: Callable[..., Project]
    ) -> None:
        project = make_project()
        project.build(PY)  # v1 (good)
        edit_state(project, version=2, scoring__rag=2.0)
        project.build(PY)  # v2 (bad)
        assert project.rollback().state_version == 1
        edit_state(project, version=3, scoring__rag=3.0)
        project.build(PY)
        assert project.status().rollback_target == 1
        assert project.rollback().state_version == 1

    def test_pruning_keeps_the_rollback_target(self, make_project: Callable[..., Project]) -> None:
        project = make_project()
        edit_state(project, safety__history_limit=2)
        project.build(PY)
        edit_state(project, version=2, scoring__rag=2.0)
        project.build(PY)
        project.rollback()
        edit_state(project, version=3, scoring__rag=3.0)
        project.build(PY)
        assert project.ledger.versions() == [1, 3]
        assert project.rollback().state_version == 1

    def test_repeated_rollback_steps_further_back(
        self, make_project: Callable[..., Project]
    ) -> None:
        project = make_project()
        project.build(PY)
        for version in (2, 3):
            edit_state(project, version=version, scoring__rag=float(version))
            project.build(PY)
        assert project.rollback().state_version == 2
        assert project.rollback().state_version == 1


class TestTamperedLedger:
    """Item 5: a record is checked against its hash and the schema before it is restored."""

    def _two_versions(self, make_project: Callable[..., Project]) -> tuple[Project, bytes]:
        project = make_project()
        project.build(PY)
        edit_state(project, version=2, scoring__rag=2.0)
        project.build(PY)
        return project, project.state_path.read_bytes()

    def test_edited_blob_is_refused(self, make_project: Callable[..., Project]) -> None:
        project, v2 = self._two_versions(make_project)
        evil = project.ledger.state(1).data.replace(b'"rag": ', b'"rag": 1')
        with sqlite3.connect(project.ledger.path) as db:
            db.execute("UPDATE states SET data = ? WHERE version = 1", (evil,))
        with pytest.raises(
            LedgerError,
            match=rf"^ledger {project.ledger.path}: state version 1 does not match its stored "
            r"sha256; refusing to use it \(restore the ledger, or pick another version\)$",
        ):
            project.rollback(1)
        assert project.state_path.read_bytes() == v2

    def test_record_that_fails_the_schema_is_refused(
        self, make_project: Callable[..., Project]
    ) -> None:
        project, v2 = self._two_versions(make_project)
        doc = json.loads(project.ledger.state(1).data)
        doc["scoring"]["rag"] = "os.system"
        evil = json.dumps(doc).encode()
        import hashlib

        with sqlite3.connect(project.ledger.path) as db:
            db.execute(
                "UPDATE states SET data = ?, sha256 = ? WHERE version = 1",
                (evil, hashlib.sha256(evil).hexdigest()),
            )
        with pytest.raises(
            LedgerError, match=rf"^ledger {project.ledger.path}: refusing to restore version 1: "
        ):
            project.rollback(1)
        assert project.state_path.read_bytes() == v2


class TestCommittedVersionIsImmutable:
    """Item 7: another build of a committed version is a new, visible build record."""

    def _templates(self, tmp_path: Path) -> Path:
        templates = tmp_path / "templates"
        shutil.copytree(PROBE_TEMPLATES, templates)
        return templates

    def test_rebuild_with_changed_templates_is_recorded(
        self, make_project: Callable[..., Project], tmp_path: Path
    ) -> None:
        templates = self._templates(tmp_path)
        project = make_project(templates=templates)
        first = project.build(PY)
        probe = templates / "probe.py.j2"
        probe.write_text(probe.read_text() + "\nPAYLOAD: int = 1\n")
        second = project.build(PY)
        assert second.build_id != first.build_id
        assert second.new_build_of_committed
        assert second.version_builds == [first.build_id, second.build_id]
        status = project.status()
        assert status.active_version_builds == [first.build_id, second.build_id]
        assert [b.build_id for b in project.ledger.builds(1)] == second.version_builds

    def test_rollback_restores_the_build_that_was_live(
        self, make_project: Callable[..., Project], tmp_path: Path
    ) -> None:
        templates = self._templates(tmp_path)
        project = make_project(templates=templates)
        v1 = project.build(PY)
        edit_state(project, version=2, scoring__rag=2.0)
        project.build(PY)
        probe = templates / "probe.py.j2"
        probe.write_text(probe.read_text() + "\nPAYLOAD: int = 1\n")
        back = project.rollback()  # the build of v1 is still there: no rebuild, same build
        assert (back.state_version, back.build_id, back.compiled) == (1, v1.build_id, False)

    def test_rollback_rebuilding_with_new_templates_says_so(
        self, make_project: Callable[..., Project], tmp_path: Path
    ) -> None:
        templates = self._templates(tmp_path)
        project = make_project(templates=templates)
        v1 = project.build(PY)
        edit_state(project, version=2, scoring__rag=2.0)
        project.build(PY)
        probe = templates / "probe.py.j2"
        probe.write_text(probe.read_text() + "\nPAYLOAD: int = 1\n")
        shutil.rmtree(project.generated_dir / v1.build_id)
        back = project.rollback()
        assert back.compiled and back.new_build and back.build_id != v1.build_id
        assert [b.build_id for b in project.ledger.builds(1)] == [v1.build_id, back.build_id]
        active = project.ledger.active()
        assert active is not None and active.build_id == back.build_id
        project.ledger.check_integrity()


class TestStatePaths:
    """Item 8: nothing is created beside a link's target, a directory or '/'."""

    def test_symlinked_state_touches_nothing(self, tmp_path: Path) -> None:
        victim_dir = tmp_path / "etc"
        victim_dir.mkdir()
        victim = victim_dir / "passwd"
        victim.write_text("root:x:0:0\n")
        project_dir = tmp_path / "proj"
        project_dir.mkdir()
        link = project_dir / "rsi_state.json"
        link.symlink_to(victim)
        message = r"^rsi_state.json: is a symlink; rsi reads only regular files$"
        with pytest.raises(StateError, match=message):
            Project(link).build(PY)
        with pytest.raises(StateError, match=message):
            Project(link).rollback()
        assert sorted(p.name for p in victim_dir.iterdir()) == ["passwd"]
        assert sorted(p.name for p in project_dir.iterdir()) == ["rsi_state.json"]

    @pytest.mark.parametrize("state", [".", "/", "..", ""])
    def test_directory_state_is_refused_by_the_cli(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        state: str,
    ) -> None:
        work = tmp_path / "a" / "b"
        work.mkdir(parents=True)
        monkeypatch.chdir(work)
        for command in ("build", "status", "rollback", "gc"):
            assert main([command, "--state", state]) == 2
            err = capsys.readouterr().err
            assert err.startswith("rsi: error: ") and err.count("\n") == 1, err
        assert not list(tmp_path.rglob("*.lock")) and not list(tmp_path.rglob(".rsi"))

    def test_self_referencing_symlink_is_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        loop = tmp_path / "loop.json"
        loop.symlink_to(loop)
        for command in ("build", "status", "rollback"):
            assert main([command, "--state", str(loop)]) == 2
            assert capsys.readouterr().err == (
                "rsi: error: loop.json: is a symlink; rsi reads only regular files\n"
            )
        inner = tmp_path / "dirloop"
        inner.symlink_to(inner)
        assert main(["status", "--state", str(inner / "rsi_state.json")]) == 2
        assert capsys.readouterr().err.count("\n") == 1


class TestOneLineErrors:
    """Item 9."""

    @pytest.mark.parametrize("value", ["inf", "1e308", "nan", "-1"])
    def test_lock_timeout(self, value: str, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["status", "--lock-timeout", value]) == 2
        shown = f"{float(value):g}"
        assert capsys.readouterr().err == (
            f"rsi: error: --lock-timeout {shown}: give a number of seconds from 0 to 86400\n"
        )

    def test_empty_state(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["status", "--state", ""]) == 2
        assert capsys.readouterr().err == (
            "rsi: error: --state '': empty path; give a state file such as rsi_state.json\n"
        )

    def test_status_of_a_missing_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        missing = tmp_path / "nope.json"
        assert main(["status", "--state", str(missing)]) == 2
        assert capsys.readouterr().err == f"rsi: error: nope.json: no such file ({missing})\n"
        assert list(tmp_path.iterdir()) == []

    def test_status_of_an_invalid_file_after_a_build(
        self, make_project: Callable[..., Project], capsys: pytest.CaptureFixture[str]
    ) -> None:
        project = make_project()
        project.build(PY)
        project.state_path.write_text("{")
        assert main(["status", "--state", str(project.state_path)]) == 0
        out = capsys.readouterr().out
        assert "vNone" not in out
        assert "state file unreadable (rsi_state.json: " in out

    def test_cc_with_flags(self) -> None:
        gcc = shutil.which("gcc")
        assert gcc is not None
        assert cc_command("gcc -w") == ["gcc", "-w"]
        info = toolchain_fingerprint(CompileSettings(backend="cython", cc="gcc -w"))
        assert info["cc"].startswith(f"{gcc} -w: ")

    def test_cc_not_found_names_the_compiler(self) -> None:
        from codegen.errors import CompileError

        with pytest.raises(
            CompileError,
            match=r"^C compiler 'no-such-cc' \(from CC='no-such-cc -w'\) not found on PATH",
        ):
            toolchain_fingerprint(CompileSettings(backend="cython", cc="no-such-cc -w"))

    def test_schema_states_the_patterns(self) -> None:
        text = json.dumps(RSIState.model_json_schema())
        assert "[A-Za-z_][A-Za-z0-9_]{0,47}" in text
        assert "[a-z][a-z0-9]{0,31}" in text


_DIE_WITH_PARENT = """
import os, sys, time
from codegen.compile import die_with_parent
die_with_parent(int(sys.argv[1]))
print(os.getpid(), flush=True)
time.sleep(60)
"""

_MIDDLE = """
import subprocess, sys, os, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())],
                         stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), flush=True)
time.sleep(60)
"""


class TestKilledCommandLeavesNothing:
    """Item 10."""

    def test_worker_dies_with_its_parent(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        middle = subprocess.Popen(
            [sys.executable, "-c", _MIDDLE, _DIE_WITH_PARENT],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert middle.stdout is not None
        worker = int(middle.stdout.readline())
        middle.send_signal(signal.SIGKILL)
        middle.wait()
        deadline = time.monotonic() + 5.0
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _running(worker):
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the worker outlived its killed parent")

    def test_worker_of_an_already_dead_parent_exits(self) -> None:
        code = "from codegen.compile import die_with_parent; die_with_parent(1 << 22)"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, timeout=60, capture_output=True, text=True
        )
        assert (proc.returncode, proc.stderr) == (1, "")

    def test_stale_mypy_dirs_are_removed_live_ones_kept(self) -> None:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        tmp = Path(tempfile.gettempdir())
        stale = Path(tempfile.mkdtemp(prefix=f"{MYPY_TMP_PREFIX}{dead.pid}-", dir=tmp))
        (stale / "m.py").write_text("x = 1\n")
        live = Path(tempfile.mkdtemp(prefix=f"{MYPY_TMP_PREFIX}{os.getpid()}-", dir=tmp))
        try:
            removed = remove_stale_mypy_dirs()
            assert stale in removed and not stale.exists()
            assert live.is_dir()
        finally:
            shutil.rmtree(live, ignore_errors=True)
            shutil.rmtree(stale, ignore_errors=True)

    def test_a_build_removes_a_killed_commands_mypy_dir(
        self, make_project: Callable[..., Project]
    ) -> None:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        stale = Path(tempfile.mkdtemp(prefix=f"{MYPY_TMP_PREFIX}{dead.pid}-"))
        project = make_project()
        project.build(PY)
        assert not stale.exists()


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead child waiting for init to reap it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"
