"""Subcommands contributed by feature modules (``rsi eval``, ``rsi tune``, ...).

Each registrar receives the subparsers object and the shared ``--state`` parent parser and
adds its subcommand with ``set_defaults(handler=...)``. Append to :data:`REGISTRARS`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["REGISTRARS"]

Registrar = Callable[
    ["argparse._SubParsersAction[argparse.ArgumentParser]", argparse.ArgumentParser], None
]


def _babi_eval(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from runtime.babi.cli import register

    register(sub, common)


def _kernels_tune(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from runtime.kernels.cli import register

    register(sub, common)


def _rsi_loop(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from runtime.rsi.cli import register

    register(sub, common)


def _gate_calibrate(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from runtime.gate_cli import register

    register(sub, common)


REGISTRARS: list[Registrar] = [_babi_eval, _kernels_tune, _gate_calibrate, _rsi_loop]
