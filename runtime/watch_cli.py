"""``rsi watch``: rebuild, gate and hot-swap on every save of the state file or a template."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import FrameType

from rich.console import Console

from codegen.errors import RSIError
from runtime.cli import JOBS, float_in, int_in, project_from, settings_from

__all__ = ["register", "JsonFormatter"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``rsi watch`` to the command line."""
    p = sub.add_parser(
        "watch",
        parents=[common],
        help="follow edits of the state and templates",
        description="Serve the state and follow every save of it and of the templates: a "
        "valid change is gated (not-worse) against the last good build and goes live, pure "
        "tier first, compiled tier once both agree; an invalid one is refused in one line, a "
        'worse one rolled back (kept in <state>.rejected.json). A save whose "version" is '
        "not newer than the newest committed one (an edit saved without bumping it) is "
        "committed as the next version and the file is left as saved; the log line says "
        "'v<N> (saved as version <M>)'. SIGTERM or Ctrl-C stops after any compile in flight.",
    )
    p.add_argument("--poll", action="store_true", help="poll (file systems without events)")
    # Defaults are WatchSettings' (40, 400, 1000 ms; the README): `rsi --help` does not
    # import the watcher (jinja2, black, NumPy).
    p.add_argument(
        "--debounce-ms", type=float_in(0, 60_000), help="quiet window before a change is judged"
    )
    p.add_argument(
        "--max-wait-ms", type=float_in(1, 600_000), help="judge a file that never settles after"
    )
    p.add_argument(
        "--rescan-ms", type=float_in(10, 3_600_000), help="compare content hashes this often"
    )
    p.add_argument(
        "--backend", default=None, help="compiled tier (default: $RSI_BACKEND or cython)"
    )
    p.add_argument("--jobs", type=JOBS, default=2, help="compiler worker processes")
    p.add_argument(
        "--compile-nice", type=int_in(0, 19), default=0, help="niceness added to compiler workers"
    )
    p.add_argument("--templates", type=Path, default=None, help="template folder to watch")
    p.add_argument(
        "--no-screen",
        dest="screen",
        action="store_false",
        help="gate every state edit by evaluation, never by the screener",
    )
    p.add_argument("--log-json", action="store_true", help="JSON log lines instead of a status")
    p.set_defaults(handler=_watch)


class JsonFormatter(logging.Formatter):
    """One JSON object per log record."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "at": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def _watch(args: argparse.Namespace) -> int:
    from runtime.watch import WatchEvent, WatchSettings, run

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    compiled = replace(settings_from(args), worker_nice=args.compile_nice)
    windows = {
        name: getattr(args, name)
        for name in ("debounce_ms", "max_wait_ms", "rescan_ms")
        if getattr(args, name) is not None
    }
    settings = WatchSettings(poll=args.poll, compile=compiled, screen=args.screen, **windows)
    project = project_from(args)
    templates = args.templates
    if templates is not None:
        _check_templates(templates)
    if args.log_json:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
        run(project.state_path, stop, settings=settings, template_dir=templates)
        return 0
    # Each outcome is printed below (the status line shows what serves): not logged twice.
    logging.getLogger("runtime.watch").setLevel(logging.ERROR)
    console = Console(stderr=True)
    with console.status(f"watching {project.state_path.name}") as status:

        def on_event(event: WatchEvent) -> None:
            line = f"[{event.outcome}] {event.message} ({event.seconds:.2f} s)"
            status.update(f"watching {project.state_path.name} · serving {event.serving}")
            console.print(line, markup=False, highlight=False, soft_wrap=True)

        run(
            project.state_path,
            stop,
            on_event=on_event,
            settings=settings,
            template_dir=templates,
        )
    return 0


def _check_templates(folder: Path) -> None:
    """Refuse a ``--templates`` that is no folder of templates, in one line."""
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
    elif not any(folder.glob("*.py.j2")):
        why = "holds no templates (*.py.j2)"
    else:
        return
    raise RSIError(
        f"--templates {folder}: {why}; give the folder of the *.py.j2 templates to watch, "
        "or leave --templates out to watch the shipped ones"
    )
