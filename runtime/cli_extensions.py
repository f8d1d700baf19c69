"""Subcommands contributed by feature modules (``rsi eval``, ``rsi loop``, ``rsi watch``, ...).

Each module in :data:`MODULES` has a ``register(sub, common)`` function that receives the
subparsers object and the shared ``--state`` parent parser and adds its subcommands with
``set_defaults(handler=...)``. Add a feature by appending its module's name.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["MODULES", "register_all"]

#: Feature modules with a ``register(sub, common)`` function, in ``rsi --help`` order.
MODULES: tuple[str, ...] = (
    "runtime.babi.cli",  # eval, tune
    "runtime.kernels.cli",  # tune kernels
    "runtime.gate_cli",  # gate calibrate
    "runtime.rsi.cli",  # analyse, loop, report
    "runtime.watch_cli",  # watch
)


def register_all(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Let every feature module add its subcommands."""
    for name in MODULES:
        importlib.import_module(name).register(sub, common)
