"""The build server: a warm process that runs ``rsi build`` for the command line.

A fresh ``rsi build`` spends about a second before it compiles anything: the imports of the
code generator (jinja2, black, mypy) and Cython's first-call set-up (its lexicon, builtins and
pipelines). The build server pays that once. ``rsi build`` connects to it over a Unix socket
and hands it the command line, the working directory, the environment, the umask and its
standard streams (file descriptors, as Mercurial's ``chg`` does). The server forks a child, a
copy of its warm self, which runs the command as ``rsi build`` would have, writing straight to
the caller's terminal; the caller exits with the child's status.

- One server per user and installation: its address names the interpreter and the checkout,
  and hashes the import path, the distributions installed there and the source of
  ``codegen`` and ``runtime``. An edited checkout or an upgraded package gets a new server,
  which stops the one it replaces.
- The first ``rsi build`` that finds no server builds in its own process, as without a server,
  and starts one for the next; a server exits after :data:`IDLE_S` without a request, and
  ``rsi server stop`` ends it (it finishes the builds it runs first).
- The child takes the caller's niceness, resource limits, CPU affinity and ignored signals
  (``nohup``); where it cannot (a lower niceness or a higher hard limit than the server's),
  the caller builds in its own process. Ctrl-C, SIGTERM and SIGHUP of ``rsi build`` are passed
  on to its child, Ctrl-Z stops it too. A ``rsi build`` killed with SIGKILL gets its child
  killed with it (the server sees the connection close), as is the child of a server that
  dies; the locks a child held are released with it.
- A closed standard stream: the caller builds in its own process.
- Only the server's own user may connect (the peer's uid is checked); its address is in
  Linux's abstract socket namespace, so no socket file is left behind.
- ``rsi build --no-server``, or ``RSI_BUILD_SERVER=0``, builds in the calling process and
  starts no server.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import importlib
import json
import logging
import os
import resource
import select
import signal
import site
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO, NoReturn

from codegen.errors import RSIError
from codegen.fsutil import process_alive

__all__ = [
    "IDLE_S",
    "ENABLE_ENV",
    "ServerStatus",
    "enabled",
    "run_served",
    "server_status",
    "stop_server",
    "serve",
]

logger = logging.getLogger(__name__)

#: A request or answer: one JSON object.
_Message = dict[str, Any]

#: A server exits after this many seconds without a build (queries do not count).
IDLE_S = 600.0
#: ``RSI_BUILD_SERVER=0`` (or ``off``, ``no``, ``false``): build in the calling process.
ENABLE_ENV = "RSI_BUILD_SERVER"
#: A client that connects but sends no whole request within this time is dropped.
REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServerStatus:
    """What a build server says of itself (``rsi server status``)."""

    pid: int
    key: str
    served: int
    running: int
    idle_s: float
    #: Asked to stop: it takes no new build and exits when its running builds end.
    stopping: bool
    #: Whether it runs the code installed now (else an older one's, finishing its builds).
    current: bool


def enabled() -> bool:
    """Whether ``rsi build`` may use (and start) a build server: Linux, and not switched off."""
    switched_off = os.environ.get(ENABLE_ENV, "1").strip().lower() in {"0", "off", "no", "false"}
    return sys.platform.startswith("linux") and not switched_off


def run_served(argv: Sequence[str]) -> int | None:
    """Run ``rsi ARGV`` in the build server and return its exit status.

    None when no server could take it (none runs, it declined, or it went away before
    starting the command): the caller runs the command itself; when none ran, one is started
    for the next command.
    """
    if not all(_is_open(fd) for fd in (0, 1, 2)):
        return None  # a closed stream would be the socket's number, and not the caller's
    try:
        sock = _connect()
    except OSError:
        _spawn()
        return None
    with sock:
        try:
            cwd = os.open(".", os.O_PATH | os.O_DIRECTORY)  # a path may be too long to hand over
        except OSError:
            return None  # the directory cannot be opened: the command says why
        try:
            _send(sock, _run_request(argv), fds=[0, 1, 2, cwd])
            reader = sock.makefile("rb")
            started = _answer(reader)
            if started is None:
                return None  # the server went away: build here
            if "declined" in started:
                # It cannot become this caller (it runs niced, or with lower limits): one
                # started by this caller can serve it and every caller it could serve.
                _ask(_address(_key()), "stop")
                _spawn()
                return None
            with _passing_signals(int(started["pid"])):
                ended = _answer(reader)
        except OSError:
            return None  # the server went away before the command started: build here
        finally:
            os.close(cwd)
    if ended is None:
        raise RSIError(
            "the build server stopped before the build finished; run the command again "
            f"(or set {ENABLE_ENV}=0 to build without it)"
        )
    return int(ended["exit"])


def server_status() -> list[ServerStatus]:
    """This installation's build servers (one, or more while an older code's finishes its
    builds), the one for the current code first."""
    found = []
    for address in _server_addresses(_installation()):
        answer = _ask(address, "status")
        if answer is not None:
            found.append(_status(answer))
    return sorted(found, key=lambda status: not status.current)


def stop_server(timeout_s: float = 10.0) -> list[ServerStatus]:
    """Stop this installation's build servers: each takes no new build and exits once its
    running builds end. Wait up to ``timeout_s`` for those with none running; return what
    each said when asked to stop."""
    stopped = []
    for address in _server_addresses(_installation()):
        answer = _ask(address, "stop")
        if answer is not None:
            stopped.append(_status(answer))
    deadline = time.monotonic() + timeout_s
    for status in stopped:
        while not status.running and process_alive(status.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    return stopped


def serve(key: str, *, idle_s: float = IDLE_S) -> int:
    """Run the build server for the installation whose key is ``key`` (as its clients compute
    it, :func:`_key`) until idle for ``idle_s`` or stopped.

    Returns at once (status 0) when another server already has the address.
    """
    try:
        os.close(os.pidfd_open(os.getpid()))  # children are waited for through pidfds
    except OSError as exc:
        logger.warning("no build server on this system: %s", exc)
        return 0
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(_address(key))
    except OSError:
        listener.close()
        return 0  # another server took the address first
    listener.listen(16)
    _shed_restrictions()
    _warm_up()
    gc.freeze()  # children share the warm heap instead of copying it at their first GC
    for address in _server_addresses(_installation()):
        if address != _address(key):
            _ask(address, "stop")  # a server of this checkout's older code
    _Server(listener, key, idle_s).run()
    return 0


@dataclass
class _Child:
    conn: socket.socket
    pid: int
    pidfd: int
    caller_gone: bool = False


class _Server:
    """The accept-and-fork loop: one thread, ``select`` over the listener, each child's pidfd
    (readable when it exits) and each caller's connection (readable when the caller is gone)."""

    def __init__(self, listener: socket.socket, key: str, idle_s: float) -> None:
        self.listener = listener
        self.stopping = False
        self.key = key
        self.idle_s = idle_s
        self.children: dict[int, _Child] = {}
        self.served = 0
        self.idle_since = time.monotonic()

    def run(self) -> None:
        while not self.stopping or self.children:
            watched: list[int | socket.socket] = [c.pidfd for c in self.children.values()]
            watched += [c.conn for c in self.children.values() if not c.caller_gone]
            watched.append(self.listener)
            timeout = None if self.children else self.idle_since + self.idle_s - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            ready = select.select(watched, [], [], timeout)[0]
            for item in ready:
                if isinstance(item, int):
                    self._reap(self.children.pop(item))
                elif item is self.listener:
                    self._accept(item)
                else:
                    self._caller_gone(item)
        self.listener.close()

    def _accept(self, listener: socket.socket) -> None:
        conn = listener.accept()[0]
        conn.settimeout(REQUEST_TIMEOUT_S)
        fds: list[int] = []
        try:
            if _peer_uid(conn) != os.getuid():
                raise ConnectionError("a connection from another user")
            request, fds = _receive(conn)
            if request["op"] == "run":
                if self.stopping:
                    raise ValueError("a run request while stopping")
                if len(fds) != 4:
                    raise ValueError("a run request without its streams and directory")
                self._fork(conn, request, fds)
                return
            self._answer_query(conn, str(request["op"]))
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("build server: dropped a request: %s", exc)
        for fd in fds:
            os.close(fd)
        conn.close()

    def _answer_query(self, conn: socket.socket, op: str) -> None:
        idle = 0.0 if self.children else time.monotonic() - self.idle_since
        status = {
            "pid": os.getpid(),
            "key": self.key,
            "served": self.served,
            "running": len(self.children),
            "idle_s": idle,
            "stopping": self.stopping,
        }
        if op == "stop" and not self.stopping:
            # Free the address (the next `rsi build` starts a new server) and answer status
            # queries at another one until the running builds end.
            self.listener.close()
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(f"{_address(self.key)}-stopping-{os.getpid()}")
            self.listener.listen(16)
            self.stopping = True
        conn.sendall(_line(status))

    def _fork(self, conn: socket.socket, request: _Message, fds: list[int]) -> None:
        ready_r, ready_w = os.pipe()  # the child says here whether it took the caller's settings
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            self._become_child(conn, request, fds, ready_w)
        os.close(ready_w)
        for fd in fds:
            os.close(fd)
        try:
            os.setpgid(pid, pid)  # also in the child: whichever runs first
        except OSError:
            pass  # the child already did
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            os.close(ready_r)
            os.killpg(pid, signal.SIGKILL)  # a child nobody could wait for never runs
            os.waitpid(pid, 0)
            raise
        child = _Child(conn, pid, pidfd)
        self.children[child.pidfd] = child
        with os.fdopen(ready_r, "rb") as ready:
            declined = ready.read().decode(errors="replace")
        answer: _Message = {"declined": declined} if declined else {"pid": pid}
        if not declined:
            self.served += 1
        try:
            conn.sendall(_line(answer))
        except OSError:
            self._caller_gone(conn)

    def _become_child(
        self, conn: socket.socket, request: _Message, fds: list[int], ready: int
    ) -> NoReturn:
        code = 1
        try:
            os.setpgid(0, 0)
            self.listener.close()
            conn.close()
            for other in self.children.values():
                other.conn.close()
                os.close(other.pidfd)
            try:
                _take_over(request, fds)
            except (OSError, ValueError) as exc:
                os.write(ready, f"cannot take the caller's settings: {exc}".encode())
                os._exit(0)
            os.close(ready)
            code = _run_child(request)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - the child's top level, as the interpreter's
            traceback.print_exc()
        finally:
            os._exit(code)

    def _reap(self, child: _Child) -> None:
        status = os.waitpid(child.pid, 0)[1]
        self.idle_since = time.monotonic()  # idle counts from the last build's end
        os.close(child.pidfd)
        code = os.waitstatus_to_exitcode(status)
        try:
            child.conn.sendall(_line({"exit": code if code >= 0 else 128 - code}))
        except OSError:
            pass  # the caller is gone
        child.conn.close()

    def _caller_gone(self, conn: socket.socket) -> None:
        """The caller closed its end (it was killed): kill its child and the compilers the
        child started (its process group), as they would have died with the command."""
        for child in self.children.values():
            if child.conn is conn and not child.caller_gone:
                child.caller_gone = True
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # it ended meanwhile: reaped at its pidfd


def _take_over(request: _Message, fds: list[int]) -> None:
    """In the forked child: become the caller as far as a command can tell: its streams,
    directory, environment, umask, niceness, resource limits, CPU affinity and ignored
    signals. Raises OSError or ValueError (before the command runs) where it cannot."""
    from codegen.compile import die_with_parent

    os.setpriority(os.PRIO_PROCESS, 0, int(request["nice"]))
    for name, (soft, hard) in request["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    os.sched_setaffinity(0, request["cpus"])
    die_with_parent(os.getppid(), group=True)  # a server that dies takes its builds along
    signal.signal(signal.SIGTERM, _terminate_group)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    for name in request["ignored"]:
        signal.signal(signal.Signals[name], signal.SIG_IGN)
    *streams, cwd = fds
    for target, fd in enumerate(streams):
        os.dup2(fd, target)
        os.close(fd)
    os.fchdir(cwd)
    os.close(cwd)
    sys.path_importer_cache.clear()  # relative entries of the import path are the caller's
    importlib.invalidate_caches()
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    os.umask(int(request["umask"]))
    tempfile.tempdir = None  # $TMPDIR is the caller's


def _run_child(request: _Message) -> int:
    """In the forked child, once it is the caller: run the command line as ``rsi`` would."""
    sys.stdin = open(0, closefd=False)  # the caller's streams, now this process's 0, 1, 2
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)
    from runtime.cli import main

    argv = [str(a) for a in request["argv"]]
    sys.argv = ["rsi", *argv]
    code = main(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return code or 141  # 128 + SIGPIPE, as `rsi` run in its own process
    except OSError:
        return code or 120  # what Python exits with when its final flush fails
    return code


def _terminate_group(signum: int, frame: FrameType | None) -> None:
    """SIGTERM of a served build: end it and the compilers it started (its process group)
    by that very signal, so the caller's status reads as a terminated ``rsi build``'s."""
    signal.signal(signum, signal.SIG_DFL)
    os.killpg(0, signum)


def _warm_up() -> None:
    """What every build pays first in a new process: the imports of the build and checks,
    black's first format, the templates' compilation and Cython's first-call set-up."""
    import runtime.cli
    import runtime.project  # noqa: F401
    from codegen import check  # noqa: F401
    from codegen.compile import warm_up as warm_compiler
    from codegen.render import warm_up as warm_renderer

    warm_renderer()
    warm_compiler()


def _shed_restrictions() -> None:
    """Undo what the server can of the restrictions of the ``rsi build`` that started it (a
    child takes each caller's own): every CPU, soft limits up to the hard ones. Niceness
    cannot be lowered; a caller it cannot serve replaces the server (:func:`run_served`)."""
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except OSError:
        pass  # a CPU set this process may not widen (a cgroup's): kept
    for name in dir(resource):
        if name.startswith("RLIMIT_") and name != "RLIMIT_CORE":
            kind = getattr(resource, name)
            hard = resource.getrlimit(kind)[1]
            try:
                resource.setrlimit(kind, (hard, hard))
            except (OSError, ValueError):
                continue  # this limit stays as inherited


def _spawn() -> None:
    """Start a server for this installation in the background (a session of its own, no
    terminal, this process's environment); a second one started at once exits."""
    if not enabled():
        return
    root = str(Path(__file__).resolve().parents[1])  # `python -m` there imports this code
    try:
        subprocess.Popen(
            [sys.executable, "-m", "runtime.server", _key()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=root,
            start_new_session=True,
        )
    except OSError as exc:
        logger.debug("no build server started: %s", exc)


def _ask(address: str, op: str) -> _Message | None:
    """Send the query ``op`` (status, stop) to the server at ``address``; None if none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        try:
            sock.settimeout(REQUEST_TIMEOUT_S)
            sock.connect(address)
            _send(sock, {"op": op}, fds=[])
            return _answer(sock.makefile("rb"))
        except OSError:
            return None


def _status(answer: _Message) -> ServerStatus:
    return ServerStatus(
        int(answer["pid"]),
        str(answer["key"]),
        int(answer["served"]),
        int(answer["running"]),
        float(answer["idle_s"]),
        bool(answer["stopping"]),
        str(answer["key"]) == _key(),
    )


def _run_request(argv: Sequence[str]) -> _Message:
    """Everything of this process a build could tell apart from its own: the command line,
    environment, umask, niceness, resource limits, CPU affinity and ignored signals."""
    rlimits = {
        name: resource.getrlimit(getattr(resource, name))
        for name in dir(resource)
        if name.startswith("RLIMIT_")
    }
    return {
        "op": "run",
        "argv": list(argv),
        "env": dict(os.environ),
        "umask": _umask(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "rlimits": rlimits,
        "cpus": sorted(os.sched_getaffinity(0)),
        "ignored": [kind.name for kind in _PASSED if signal.getsignal(kind) == signal.SIG_IGN],
    }


#: The signals a served build gets from its caller (unless the caller ignores them).
_PASSED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _passing_signals(pid: int) -> Iterator[None]:
    """Pass Ctrl-C, SIGTERM and SIGHUP of this process on to the child running the command
    (those this process does not ignore); Ctrl-Z stops the child's group, then this process,
    and a continue continues both."""

    def forward(signum: int, frame: FrameType | None) -> None:
        _signal_group(pid, signum)

    def suspend(signum: int, frame: FrameType | None) -> None:
        _signal_group(pid, signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)

    def resume(signum: int, frame: FrameType | None) -> None:
        _signal_group(pid, signal.SIGCONT)

    handlers: dict[signal.Signals, Callable[[int, FrameType | None], None]] = {
        kind: forward for kind in _PASSED if signal.getsignal(kind) != signal.SIG_IGN
    }
    if signal.getsignal(signal.SIGTSTP) != signal.SIG_IGN:
        handlers.update({signal.SIGTSTP: suspend, signal.SIGCONT: resume})
    previous = {kind: signal.signal(kind, handler) for kind, handler in handlers.items()}
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)


def _signal_group(pid: int, signum: int) -> None:
    """``signum`` to the served build (SIGINT, SIGTERM, SIGHUP: to the child alone, as a
    terminal's signal reaches ``rsi`` and not its compilers; stop and continue: its group)."""
    try:
        if signum in (signal.SIGSTOP, signal.SIGCONT):
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass  # it has just ended; its status is on its way


def _connect() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(_address(_key()))
    except OSError:
        sock.close()
        raise
    return sock


_LENGTH = struct.Struct("!I")


def _send(sock: socket.socket, request: _Message, *, fds: list[int]) -> None:
    payload = json.dumps(request).encode()
    socket.send_fds(sock, [_LENGTH.pack(len(payload))], fds)
    sock.sendall(payload)


def _receive(conn: socket.socket) -> tuple[_Message, list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(conn, _LENGTH.size, 4)
    if len(head) != _LENGTH.size:
        raise ValueError("a short request header")
    (length,) = _LENGTH.unpack(head)
    chunks, left = [], length
    while left:
        chunk = conn.recv(min(left, 1 << 16))
        if not chunk:
            raise ValueError("a request cut short")
        chunks.append(chunk)
        left -= len(chunk)
    request: _Message = json.loads(b"".join(chunks))
    return request, fds


def _answer(reader: BinaryIO) -> _Message | None:
    line = reader.readline()
    if not line:
        return None
    answer: _Message = json.loads(line)
    return answer


def _line(answer: _Message) -> bytes:
    return json.dumps(answer).encode() + b"\n"


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _address(key: str) -> str:
    """The server's abstract socket name: this user, this installation, this code."""
    return f"{_installation()}{key[:32]}"


@functools.lru_cache(maxsize=1)
def _installation() -> str:
    """The address prefix of this user's servers of this interpreter, checkout and
    ``$PYTHONPATH`` (servers of two import paths serve side by side)."""
    root = Path(__file__).resolve().parents[1]
    path = os.environ.get("PYTHONPATH", "")
    where = hashlib.sha256(f"{sys.executable}\0{root}\0{path}".encode()).hexdigest()[:16]
    return f"{_USER_PREFIX}{where}-"


_USER_PREFIX = f"\0rsi-build-{os.getuid()}-"


def _server_addresses(prefix: str) -> list[str]:
    """Addresses of the listening build servers whose names start with ``prefix``
    (``/proc/net/unix`` lists abstract names with ``@`` for the leading NUL)."""
    shown = "@" + prefix[1:]
    try:
        with open("/proc/net/unix") as table:
            lines = table.read().splitlines()[1:]
    except OSError:
        return []
    listening = {fields[-1] for fields in map(str.split, lines) if len(fields) == 8}
    return sorted("\0" + name[1:] for name in listening if name.startswith(shown))


@functools.lru_cache(maxsize=1)
def _key() -> str:
    """What the server's code and packages are: the interpreter, ``$PYTHONPATH``, the
    distributions installed in its site directories (``*.dist-info`` names carry versions)
    and the package source. Not the working directory: a server serves every directory."""
    digest = hashlib.sha256(f"{sys.executable}\0{sys.version}".encode())
    digest.update(b"\0PYTHONPATH\0" + os.environ.get("PYTHONPATH", "").encode())
    for entry in _site_dirs():
        installed = [n for n in os.listdir(entry) if n.endswith(_INSTALLED)]
        digest.update(f"\0{entry}\0".encode() + "\0".join(sorted(installed)).encode())
    root = Path(__file__).resolve().parents[1]
    for package in ("codegen", "runtime"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _site_dirs() -> list[str]:
    found = [*site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        found.append(site.getusersitepackages())
    return [entry for entry in found if os.path.isdir(entry)]


_INSTALLED = (".dist-info", ".egg-info", ".egg-link", ".pth")


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
