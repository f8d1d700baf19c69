"""Subcommands contributed by feature modules (``rsi eval``, ``rsi loop``, ``rsi watch``, ...).

Each module in :data:`MODULES` has a ``register(sub, common)`` function that receives the
subparsers object and the shared ``--state`` parent parser and adds its subcommands with
``set_defaults(handler=...)``. Add a feature by adding its subcommands to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

__all__ = ["COMMANDS", "MODULES", "register_all"]

#: Subcommand → (the feature module that adds it, its line in ``rsi --help``), in ``rsi
#: --help`` order. ``rsi --help`` and the core commands list the others from here, so a
#: feature module (and what it imports: scipy, matplotlib, the model) loads only when one of
#: its subcommands runs. tests/runtime/test_cli_imports.py keeps this in step with the modules.
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("runtime.babi.cli", "bAbI accuracy of the state's build"),
    "tune": ("runtime.kernels.cli", "autotune generated code on this machine"),
    "gate": ("runtime.gate_cli", "the promotion gate's statistics"),
    "analyse": ("runtime.rsi.cli", "group train failures; propose fixes"),
    "loop": ("runtime.rsi.cli", "the RSI loop: propose, gate, promote"),
    "report": ("runtime.rsi.cli", "HTML report of the latest loop run"),
    "watch": ("runtime.watch_cli", "follow edits of the state and templates"),
}

#: Feature modules with a ``register(sub, common)`` function.
MODULES: tuple[str, ...] = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))


def register_all(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> None:
    """Let feature modules add their subcommands.

    With ``argv`` (a command line), only the modules of subcommands named in it are
    imported and register in full; every other subcommand is listed by name and help only.
    Without it, every module registers in full.
    """
    wanted = (
        MODULES if argv is None else tuple({COMMANDS[t][0]: 0 for t in argv if t in COMMANDS})
    )
    for name in wanted:
        importlib.import_module(name).register(sub, common)
    for command, (module, help_text) in COMMANDS.items():
        if module not in wanted:
            sub.add_parser(command, help=help_text)
