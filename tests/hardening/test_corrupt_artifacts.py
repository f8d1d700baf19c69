"""Corrupt cache entries and builds: detected before reuse, discarded and rebuilt with a
one-line warning, never published into a build or imported; a bad manifest is one line."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PURE, Served, serve

from codegen.build import CACHE_DIR, MANIFEST
from codegen.compile import SEAL
from codegen.manifest import file_sha256
from codegen.toolchain import CompileSettings
from runtime.cli import main
from runtime.loader import LoadError, load_build

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent


@pytest.fixture
def served(tmp_path: Path, hardening_cache: Path) -> Served:
    """A project with its own module cache (these tests damage it); the check and format
    memos are the session's, so mypy runs once."""
    return serve(tmp_path / "proj", _own_cache(tmp_path, hardening_cache))


def _own_cache(tmp_path: Path, shared: Path) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir()
    for memo in ("checked", "mypy_cache", "black"):
        (shared / memo).mkdir(exist_ok=True)
        (cache / memo).symlink_to(shared / memo)
    return cache


def _cache_entry(served: Served) -> Path:
    manifest = json.loads((_build(served) / MANIFEST).read_text())
    key = manifest["modules"]["tiny"]["key"]
    return served.project.generated_dir / CACHE_DIR / key


def _build(served: Served) -> Path:
    return served.project.generated_dir / served.build_id


def _flip_byte(path: Path, offset: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _replace_by_a_file(entry: Path) -> None:
    shutil.rmtree(entry)
    entry.write_bytes(b"junk")


def _replace_by_a_symlink(entry: Path) -> None:
    """A symlink to a dir of someone else's: the link goes, never what it points to."""
    outside = entry.parent.parent / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"not the cache's")
    shutil.rmtree(entry)
    entry.symlink_to(outside, target_is_directory=True)


def _rebuild_without_build_dir(served: Served) -> None:
    shutil.rmtree(_build(served))
    shutil.rmtree(served.project.generated_dir / CACHE_DIR / "plans")
    served.project.build(PURE)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda e: _truncate(e / "tiny.py"), "does not match its seal (tiny.py)"),
        (lambda e: _flip_byte(e / "tiny.py"), "does not match its seal (tiny.py)"),
        (lambda e: (e / "tiny.py").unlink(), "does not match its seal (tiny.py)"),
        (lambda e: (e / SEAL).unlink(), "has no seal"),
        (lambda e: (e / SEAL).write_bytes(b"\xff\xfe"), "has an unreadable seal"),
        (_replace_by_a_file, "is not a directory"),
        (_replace_by_a_symlink, "is not a directory"),
    ],
    ids=[
        "truncated",
        "flipped-byte",
        "missing-artifact",
        "missing-seal",
        "non-utf8-seal",
        "a-file",
        "a-symlink",
    ],
)
def test_bad_cache_entry_is_rebuilt_never_republished(
    served: Served, damage: object, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    entry = _cache_entry(served)
    good = (_build(served) / "tiny.py").read_bytes()
    damage(entry)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING):
        _rebuild_without_build_dir(served)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"cache entry {entry.name} {why}; discarded, it is compiled again"]
    assert (_build(served) / "tiny.py").read_bytes() == good
    assert (entry / "tiny.py").read_bytes() == good
    assert (entry / SEAL).read_text() == f"{file_sha256(entry / 'tiny.py')}  tiny.py\n"
    served.project.load_active()
    assert not list(entry.parent.glob(".tmp-*"))  # nothing left half-discarded
    outside = entry.parent.parent / "outside"
    assert not outside.exists() or (outside / "keep").read_bytes() == b"not the cache's"


def test_flipped_byte_in_the_active_build_is_rebuilt(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    _flip_byte(_build(served) / "tiny.py")
    with caplog.at_level(logging.WARNING):
        report = served.project.build(PURE)  # the unchanged state: the render-key fast path
    assert report.build_id == served.build_id
    assert [r.getMessage() for r in caplog.records] == [
        f"corrupt build discarded, it is built again: {served.build_id}: "
        "tiny.py of module tiny does not match its manifest"
    ]
    assert served.project.load_active().module("tiny").rsi_selftest() > 0


def test_rollback_rebuilds_a_corrupt_target(served: Served) -> None:
    doc = json.loads(served.good)
    doc["version"] = 2
    doc["scoring"]["rag"] = doc["scoring"]["rag"] + 1.0
    served.project.state_path.write_text(json.dumps(doc, indent=2) + "\n")
    served.project.build(PURE)
    _truncate(_build(served) / "tiny.py")
    report = served.project.rollback(1)
    assert (report.build_id, report.compiled) == (served.build_id, True)
    load_build(_build(served), template_dir=served.project.template_dir)


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda t: t[: len(t) // 2], "{id}/manifest.json: (document): Invalid JSON: "),
        (lambda t: b"\xff" + t, "{id}/manifest.json: not UTF-8 (byte 0); rebuild it"),
        (
            lambda t: t.replace(b'"tiny": {', b'"os": {'),
            "{id}/manifest.json: module 'os' is not one the templates produce (tiny)",
        ),
        (
            lambda t: t.replace(b'"artifact": "tiny.py"', b'"artifact": "../tiny.py"'),
            "{id}/manifest.json: artifact '../tiny.py' of module 'tiny' is not a plain file "
            "name tiny<.py or extension suffix>",
        ),
        (
            lambda t: t.replace(b'"build_id": "', b'"build_id": "0'),
            "{id}/manifest.json: build_id: String should match pattern '^[0-9a-f]{{16}}$'; "
            "rebuild it",
        ),
        (
            lambda t: t.replace(b'"tier": "python"', b'"tier": 3'),
            "{id}/manifest.json: tier: Input should be 'python', 'cython' or 'nuitka'; rebuild it",
        ),
    ],
    ids=["truncated", "non-utf8", "module-os", "artifact-outside", "build-id", "tier-type"],
)
def test_bad_manifest_is_one_line_everywhere(
    served: Served, edit: object, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _build(served) / MANIFEST
    manifest.write_bytes(edit(manifest.read_bytes()))  # type: ignore[operator]
    expected = error.format(id=served.build_id)
    with pytest.raises(LoadError) as info:
        load_build(_build(served), template_dir=served.project.template_dir)
    assert str(info.value).startswith(expected)
    with pytest.raises(LoadError) as info:
        served.project.diff(served.build_id, served.build_id)
    assert str(info.value).startswith(expected)
    report = served.project.gc()
    assert [b.startswith(expected) for b in report.bad_builds] == [True]
    assert manifest.exists()  # skipped: reported, never deleted by guess
    # A build finds the corrupt build, moves it aside and builds it again.
    assert served.project.build(PURE).build_id == served.build_id
    served.project.load_active()


def test_gc_skips_a_bad_build_and_removes_the_others(served: Served) -> None:
    bad = served.project.generated_dir / "0123456789abcdef"
    shutil.copytree(_build(served), bad)
    orphan = served.project.generated_dir / "fedcba9876543210"
    shutil.copytree(_build(served), orphan)
    text = (orphan / MANIFEST).read_text().replace(served.build_id, orphan.name)
    (orphan / MANIFEST).write_text(text)
    report = served.project.gc()
    assert report.removed_builds == [orphan.name]
    assert report.bad_builds == [
        f"{bad.name}/manifest.json: build_id '{served.build_id}' is not the directory's "
        "name; rebuild it"
    ]
    assert bad.exists() and not orphan.exists()


def test_cli_reports_bad_builds_in_one_line(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _build(served) / MANIFEST
    manifest.write_bytes(b"\xff" + manifest.read_bytes())
    state = str(served.project.state_path)
    assert main(["diff", served.build_id, served.build_id, "--state", state]) == 2
    err = capsys.readouterr().err
    assert err == (f"rsi: error: {served.build_id}/manifest.json: not UTF-8 (byte 0); rebuild it\n")
    assert main(["gc", "--state", state]) == 0
    out = capsys.readouterr().out
    assert out == (
        "removed 0 builds, 0.0 MB freed; skipped 1 bad build: "
        f"{served.build_id}/manifest.json: not UTF-8 (byte 0); rebuild it\n"
    )


@pytest.mark.slow
def test_truncated_shared_object_in_the_cache_never_loads(
    tmp_path: Path, hardening_cache: Path
) -> None:
    """The issue's reproduction: truncate the cached .so files, delete the build, load."""
    served = serve(tmp_path / "proj", _own_cache(tmp_path, hardening_cache))
    settings = CompileSettings(backend="cython", jobs=1)
    report = served.project.build(settings)
    cache = served.project.generated_dir / CACHE_DIR
    damaged = sorted(cache.glob("*/*.so"))
    assert len(damaged) == 2  # the module and the shared utility module
    for path in damaged:
        _truncate(path)
    shutil.rmtree(served.project.generated_dir / report.build_id)
    shutil.rmtree(cache / "plans")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}"}
    code = (
        "import sys; from pathlib import Path; from hardening_corpus import TEMPLATES; "
        "from codegen.toolchain import CompileSettings; from runtime.project import Project; "
        "p = Project(Path(sys.argv[1]), template_dir=TEMPLATES); "
        "p.build(CompileSettings(backend='cython', jobs=1)); "
        "print(p.load_active().module('tiny').rsi_selftest())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(served.project.state_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) > 0
    assert proc.stderr.count("discarded, it is compiled again") == 2
    for path in damaged:
        assert path.stat().st_size > 0 and (path.parent / SEAL).exists()
