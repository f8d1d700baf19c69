"""Hatchling build hook: render and compile the shipped state into the wheel.

``pip install .`` runs :meth:`RSIBuildHook.initialize`, which builds ``rsi_state.json`` with
portable compiler flags and force-includes the build directory and ``generated/shipped.json``
in a platform-tagged wheel. With no working C compiler, or ``RSI_BACKEND=python``, the wheel
carries the pure-Python tier instead, and the build says so in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

__all__ = ["RSIBuildHook"]

_BACKENDS = ("cython", "python")


class RSIBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Build hook ``custom``: options ``state`` (path) and ``backend`` (cython | python)."""

    PLUGIN_NAME = "custom"

    @property
    def state_path(self) -> Path:
        """Option ``state``: the state file to build, relative to the project root."""
        value = self.config.get("state", "rsi_state.json")
        if not isinstance(value, str) or not value:
            raise TypeError(
                "Option `state` of build hook `custom` must be a non-empty string "
                '(the state file, e.g. "rsi_state.json")'
            )
        path = Path(self.root) / value
        if not path.is_file():
            raise FileNotFoundError(
                f"Option `state` of build hook `custom` names {value!r}, which does not exist; "
                "point it at the project's rsi_state.json"
            )
        return path

    @property
    def backend(self) -> str:
        """Option ``backend`` (overridden by ``$RSI_BACKEND``): ``cython`` or ``python``."""
        value = os.environ.get("RSI_BACKEND") or self.config.get("backend", "cython")
        if value not in _BACKENDS:
            raise ValueError(
                f"Option `backend` of build hook `custom` (or $RSI_BACKEND) is {value!r}; "
                f"use one of: {', '.join(_BACKENDS)}"
            )
        return str(value)

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Build the shipped state and add it to the wheel."""
        if self.target_name != "wheel":
            return
        sys.path.insert(0, self.root)  # the build runs from the source tree being packaged
        from codegen.build import build_state
        from codegen.errors import CompileError
        from codegen.state import load_state
        from codegen.toolchain import CompileSettings

        state_path = self.state_path
        state = load_state(state_path)
        data = state_path.read_bytes()
        generated = Path(self.root) / "generated"
        backend = self.backend
        try:
            result = build_state(state, data, CompileSettings.portable(backend), generated)  # type: ignore[arg-type]
        except CompileError as exc:
            if backend != "cython":
                raise
            self.app.display_warning(
                f"rsi: no working C compiler ({exc}); the wheel carries the pure-Python tier"
            )
            result = build_state(state, data, CompileSettings.portable("python"), generated)
        pointer = generated / "shipped.json"
        pointer.write_text(json.dumps({"build_id": result.build_id, "tier": result.tier}) + "\n")
        self.app.display_info(
            f"rsi: built state v{state.version} as {result.build_id} ({result.tier} tier)"
        )
        if version == "editable":
            return  # the editable install imports generated/ from the source tree
        build_data["force_include"][str(result.path)] = f"generated/{result.build_id}"
        build_data["force_include"][str(pointer)] = "generated/shipped.json"
        compiled = result.tier != "python"
        build_data["pure_python"] = not compiled
        build_data["infer_tag"] = compiled

    def clean(self, versions: list[str]) -> None:
        """Remove build directories and the shipped pointer (the module cache stays)."""
        generated = Path(self.root) / "generated"
        for path in generated.iterdir():
            if path.is_dir() and not path.name.startswith((".", "_")):
                shutil.rmtree(path)
        (generated / "shipped.json").unlink(missing_ok=True)
