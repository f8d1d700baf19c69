"""The build hook: one class per option, exact messages; the wheel installs and imports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hatch_build import RSIBuildHook
from tests.conftest import REPO


def hook(root: Path, **config: Any) -> RSIBuildHook:
    return RSIBuildHook(str(root), config, None, None, str(root / "dist"), "wheel")


class TestStateOption:
    def test_default_is_the_shipped_state(self) -> None:
        assert hook(REPO).state_path == REPO / "rsi_state.json"

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(
            FileNotFoundError,
            match=r"^Option `state` of build hook `custom` names 'nope.json', which does not "
            r"exist; point it at the project's rsi_state.json$",
        ):
            _ = hook(tmp_path, state="nope.json").state_path

    def test_wrong_type(self, tmp_path: Path) -> None:
        with pytest.raises(TypeError, match=r"^Option `state` of build hook `custom` must be"):
            _ = hook(tmp_path, state=3).state_path


class TestBackendOption:
    def test_default_is_cython(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("RSI_BACKEND", raising=False)
        assert hook(REPO).backend == "cython"

    def test_environment_overrides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RSI_BACKEND", "python")
        assert hook(REPO, backend="cython").backend == "python"

    def test_unknown_backend(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("RSI_BACKEND", raising=False)
        with pytest.raises(
            ValueError,
            match=r"^Option `backend` of build hook `custom` \(or \$RSI_BACKEND\) is 'rust'; "
            r"use one of: cython, python$",
        ):
            _ = hook(REPO, backend="rust").backend


class TestNoCompiler:
    def test_falls_back_to_the_pure_python_tier_and_says_so(
        self,
        tmp_path: Path,
        module_cache: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        shutil.copy(REPO / "rsi_state.json", tmp_path / "rsi_state.json")
        (tmp_path / "generated").mkdir()
        (tmp_path / "generated" / ".cache").symlink_to(module_cache)
        monkeypatch.setenv("CC", "no-such-cc")
        monkeypatch.delenv("RSI_BACKEND", raising=False)
        build_data: dict[str, Any] = {"force_include": {}}
        hook(tmp_path).initialize("standard", build_data)
        assert build_data["pure_python"] is True and build_data["infer_tag"] is False
        shipped = json.loads((tmp_path / "generated" / "shipped.json").read_text())
        assert shipped["tier"] == "python"
        warnings = [ln for ln in capsys.readouterr().err.splitlines() if "pure-Python" in ln]
        assert len(warnings) == 1
        assert "C compiler 'no-such-cc' not found" in warnings[0]


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_imports_the_compiled_tier(
    tmp_path: Path,
) -> None:
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", str(REPO), "--no-build-isolation", "--no-deps", "-q", "-w", str(wheels)],
        check=True,
        cwd=REPO,
    )
    (wheel,) = wheels.glob("rsi_toolkit-*.whl")
    assert "linux" in wheel.name  # platform-tagged: it carries compiled extensions
    names = zipfile.ZipFile(wheel).namelist()
    assert "generated/shipped.json" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", str(wheel)], check=True)
    probe = "from runtime.loader import load_shipped; b = load_shipped(); print(b.tier, b.build_id)"
    out = subprocess.run(
        [str(vpy), "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    tier, _ = out.stdout.split()
    assert tier == "cython"
    assert (venv / "bin" / "rsi").exists()
