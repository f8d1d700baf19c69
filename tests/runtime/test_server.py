"""The build server (runtime/server.py): `rsi build` run by a warm forked child, as if in-process.

Every command here is a real `python -m runtime.cli` process talking to a real server; the
module shares one server (its warm-up costs a few seconds) and stops it at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from codegen.locking import project_lock
from runtime.project import Project

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the build server is Linux-only"
)

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "RSI_BUILD_SERVER": "1", "RSI_BACKEND": "python", **extra}


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "runtime.cli", *args]
    return subprocess.run(command, cwd=REPO, env=_env(**env), capture_output=True, text=True)


def _status() -> dict[str, object]:
    """The server of this code, as `rsi server status --json` reports it; {} when none runs."""
    done = _cli("server", "status", "--json")
    assert done.returncode == 0, done.stderr
    servers = json.loads(done.stdout.splitlines()[-1])["servers"]
    current: list[dict[str, object]] = [s for s in servers if s["current"]]
    return current[0] if current else {}


def _await(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _start_server() -> None:
    """The first served command finds no server and starts one (then runs in-process)."""
    _cli("build", "--state", "/nonexistent/rsi_state.json")
    _await(lambda: "pid" in _status(), 60, "the build server")


@pytest.fixture(scope="module", autouse=True)
def _no_server_left() -> Iterator[None]:
    _cli("server", "stop")
    yield
    _cli("server", "stop")


@pytest.fixture
def server() -> None:
    """This code's server, running (started once, then shared by the tests that need it)."""
    if "pid" not in _status():
        _start_server()


@contextmanager
def _waiting_build(
    project: Project, prefix: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[str]]:
    """A served `rsi build` of ``project`` (run under ``prefix``, e.g. nohup), waiting for
    the project lock this test holds until the block ends."""
    command = [sys.executable, "-m", "runtime.cli", "build", "--state", str(project.state_path)]
    with project_lock(project.state_path, timeout_s=5):
        proc = subprocess.Popen(
            [*prefix, *command, "--lock-timeout", "60"],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _await(lambda: _status()["running"] == 1, 30, "the served build to start")
        yield proc


def _address_of(key: str) -> str:
    """The listening address of the server with ``key`` (from ``/proc/net/unix``)."""
    names = [line.split()[-1] for line in Path("/proc/net/unix").read_text().splitlines()]
    found = {name for name in names if name.startswith("@rsi-build-") and key[:32] in name}
    assert len(found) == 1, found
    return "\0" + found.pop()[1:]


def _server_processes(key: str) -> list[int]:
    """Pids of the server and of its children (forks share its command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and key.encode() in cmdline:
            found.append(int(entry.name))
    return found


def test_a_served_build_is_the_build_in_process(
    server: None, make_project: Callable[..., Project]
) -> None:
    served_project = make_project(templates=None, name="served")
    local_project = make_project(templates=None, name="local")
    before = int(_status()["served"])  # type: ignore[call-overload]
    served = _cli("build", "--state", str(served_project.state_path), "--json")
    local = _cli("build", "--state", str(local_project.state_path), "--json", "--no-server")
    assert served.returncode == local.returncode == 0, served.stderr + local.stderr
    assert int(_status()["served"]) == before + 1  # type: ignore[call-overload]
    first = json.loads(served.stdout.splitlines()[-1])
    second = json.loads(local.stdout.splitlines()[-1])
    assert first["build_id"] == second["build_id"]
    assert first["tier"] == "python"  # the caller's $RSI_BACKEND, not the server's
    assert served.stdout.splitlines()[0].startswith(f"build {first['build_id']} (python)")


def test_a_served_error_is_the_same_line_and_status(
    server: None, make_project: Callable[..., Project]
) -> None:
    project = make_project(templates=None)
    project.state_path.write_text("{not json")
    served = _cli("build", "--state", str(project.state_path))
    local = _cli("build", "--state", str(project.state_path), "--no-server")
    assert served.returncode == local.returncode == 2
    assert served.stderr == local.stderr
    assert served.stderr.startswith("rsi: error: rsi_state.json: invalid JSON")


def test_a_relative_state_path_is_the_callers(
    server: None, make_project: Callable[..., Project]
) -> None:
    project = make_project(templates=None)
    command = [sys.executable, "-m", "runtime.cli", "build"]  # default ./rsi_state.json
    done = subprocess.run(
        command,
        cwd=project.state_path.parent,
        env=_env(),
        text=True,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    assert (project.state_path.parent / ".rsi").is_dir()


def test_ctrl_c_reaches_the_served_build(
    server: None, make_project: Callable[..., Project]
) -> None:
    project = make_project(templates=None)
    with _waiting_build(project) as proc:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "rsi: interrupted; state, builds and history are as they were "
        "(the next command removes any temp files)"
    )
    assert _status()["running"] == 0


def test_a_killed_caller_takes_its_served_build_along(
    server: None, make_project: Callable[..., Project]
) -> None:
    project = make_project(templates=None)
    with _waiting_build(project) as proc:
        proc.kill()
        proc.wait()  # not communicate(): the child holds the pipes until it ends
        _await(lambda: _status()["running"] == 0, 10, "the served build to be killed")
        _, err = proc.communicate(timeout=5)
    assert err == ""  # killed while it waited for the lock, not ended by its timeout


def test_another_users_connection_is_dropped(server: None) -> None:
    interpreter = Path("/usr/bin/python3")  # one that user 65534 may run
    if os.getuid() != 0 or not interpreter.exists():
        pytest.skip("needs root and /usr/bin/python3 to connect as another user")
    key = str(_status()["key"])
    probe = f"""
import socket, struct
s = socket.socket(socket.AF_UNIX)
s.connect({_address_of(key)!r})
payload = b'{{"op": "status"}}'
try:
    socket.send_fds(s, [struct.pack("!I", len(payload))], [])
    s.sendall(payload)
    print(repr(s.recv(100)))
except (BrokenPipeError, ConnectionResetError):
    print("dropped")
"""
    done = subprocess.run(
        [str(interpreter), "-c", probe],
        user=65534,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.strip() in {"b''", "dropped"}, done.stderr


def test_a_request_without_streams_is_refused(server: None) -> None:
    key = str(_status()["key"])
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(_address_of(key))
        payload = json.dumps({"op": "run", "argv": ["build"], "env": {}}).encode()
        socket.send_fds(sock, [len(payload).to_bytes(4, "big")], [])
        sock.sendall(payload)
        assert sock.recv(100) == b""
    assert _status()["running"] == 0


def test_a_dead_server_fails_the_build_in_one_line_and_kills_its_child(
    make_project: Callable[..., Project],
) -> None:
    _cli("server", "stop")
    _start_server()
    status = _status()
    project = make_project(templates=None)
    with _waiting_build(project) as proc:
        os.kill(int(status["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        _, err = proc.communicate(timeout=30)
        _await(lambda: not _server_processes(str(status["key"])), 10, "the child to die")
    assert proc.returncode == 2
    assert err == (
        "rsi: error: the build server stopped before the build finished; run the command "
        "again (or set RSI_BUILD_SERVER=0 to build without it)\n"
    )


def test_stop_then_build_runs_in_process_and_starts_a_new_server(
    make_project: Callable[..., Project],
) -> None:
    _cli("server", "stop")
    assert _cli("server", "status").stdout == "no build server runs\n"
    project = make_project(templates=None)
    done = _cli("build", "--state", str(project.state_path))
    assert done.returncode == 0, done.stderr
    _await(lambda: "pid" in _status(), 60, "a new build server")
    stopped = _cli("server", "stop")
    assert stopped.stdout.startswith("build server ") and "stopped" in stopped.stdout


def test_switched_off_starts_no_server(make_project: Callable[..., Project]) -> None:
    _cli("server", "stop")
    project = make_project(templates=None)
    assert _cli("build", "--state", str(project.state_path), RSI_BUILD_SERVER="0").returncode == 0
    assert _cli("build", "--state", str(project.state_path), "--no-server").returncode == 0
    time.sleep(1.0)  # a server started by mistake would have bound its address by now
    assert _status() == {}


def _children(key: str, server_pid: int) -> list[int]:
    return [pid for pid in _server_processes(key) if pid != server_pid]


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: [0] is the state, [16] the nice."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def test_the_callers_ignored_hangup_niceness_and_ctrl_z_hold_for_its_build(
    server: None, make_project: Callable[..., Project]
) -> None:
    status = _status()
    project = make_project(templates=None)
    with _waiting_build(project, prefix=("nohup", "nice", "-n", "7")) as proc:
        (child,) = _children(str(status["key"]), int(status["pid"]))  # type: ignore[call-overload]
        assert _proc_stat(child)[16] == "7"
        proc.send_signal(signal.SIGHUP)  # ignored, as nohup has it
        proc.send_signal(signal.SIGTSTP)
        _await(lambda: _proc_stat(child)[0] == "T", 10, "Ctrl-Z to stop the served build")
        proc.send_signal(signal.SIGCONT)
        _await(lambda: _proc_stat(child)[0] != "T", 10, "the served build to continue")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith("build ")


def test_sigterm_reads_as_a_terminated_build(
    server: None, make_project: Callable[..., Project]
) -> None:
    project = make_project(templates=None)
    with _waiting_build(project) as proc:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM  # as `rsi build` in its own process


def _shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120
    )


def test_closed_stdout_a_closed_pipe_and_a_long_directory_behave_as_in_process(
    server: None, make_project: Callable[..., Project]
) -> None:
    project = make_project(templates=None)
    build = f"{sys.executable} -m runtime.cli build --state {project.state_path}"
    closed = _shell(f"exec 1>&-; {build}; echo rc=$? >&2", REPO)
    assert closed.stderr.strip().splitlines()[-1] == "rc=0", closed.stderr
    piped = _shell(f"{build} --json | head -0; echo rc=${{PIPESTATUS[0]}} >&2", REPO)
    assert piped.stderr == "rc=141\n"
    deep = "d" * 200  # 25 of them: a working directory longer than PATH_MAX
    script = (
        f"for i in $(seq 25); do mkdir {deep} && cd {deep}; done; cp {project.state_path} . && "
        f"{sys.executable} -m runtime.cli build; {sys.executable} -m runtime.cli build --no-server"
    )
    done = _shell(script, project.state_path.parent)
    served, local = done.stderr.splitlines()
    assert served == local
    assert local == "rsi: error: rsi_state.json: cannot inspect rsi_state.json: File name too long"


def test_stop_does_not_wait_for_running_builds(
    server: None, make_project: Callable[..., Project]
) -> None:
    project = make_project(templates=None)
    with _waiting_build(project) as proc:
        stopped = _cli("server", "stop")
        assert stopped.stdout.endswith(
            "takes no new build; it exits when its 1 running build(s) end\n"
        )
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_a_server_of_newer_code_stops_the_older_one(server: None) -> None:
    old = _status()
    newer = subprocess.Popen(
        [sys.executable, "-m", "runtime.server", "0" * 64], cwd=REPO, env=_env()
    )
    try:
        _await(lambda: not _alive(int(old["pid"])), 60, "the older server to stop")  # type: ignore[call-overload]
    finally:
        _cli("server", "stop")
        newer.wait(timeout=30)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and _proc_stat(pid)[0] != "Z"


def test_output_that_cannot_be_written_is_one_line(
    server: None, make_project: Callable[..., Project]
) -> None:
    project = make_project(templates=None)
    build = f"{sys.executable} -m runtime.cli build --state {project.state_path}"
    for command in (build, f"{build} --no-server"):
        done = _shell(f"{command} >/dev/full", REPO)
        assert done.returncode == 2
        assert done.stderr == "rsi: error: cannot write the output: No space left on device\n"


def test_a_niced_server_serves_an_unniced_caller_or_is_replaced(
    make_project: Callable[..., Project],
) -> None:
    _cli("server", "stop")
    project = make_project(templates=None)
    build = [sys.executable, "-m", "runtime.cli", "build", "--state", str(project.state_path)]
    subprocess.run(["nice", "-n", "9", *build], cwd=REPO, env=_env(), check=True)
    _await(lambda: "pid" in _status(), 60, "a server started by a niced build")
    niced = _status()
    assert _proc_stat(int(niced["pid"]))[16] == "9"  # type: ignore[call-overload]
    assert _cli(*build[3:]).returncode == 0
    if os.getuid() == 0:  # root's child can lower its niceness: served
        assert _status()["served"] == 1
        return
    # Declined: that build ran in its own process and started a server without the nice.
    _await(lambda: _status().get("pid") not in (None, niced["pid"]), 60, "a new server")
    assert _proc_stat(int(_status()["pid"]))[16] == "0"  # type: ignore[call-overload]
    assert _cli(*build[3:]).returncode == 0
    assert _status()["served"] == 1


def test_a_caller_the_child_cannot_become_is_declined(server: None) -> None:
    """A setting the child cannot take (here CPUs the machine lacks): the server answers
    "declined" before anything runs, and the caller builds in its own process."""
    key = str(_status()["key"])
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(_address_of(key))
        request = {
            "op": "run",
            "argv": ["build"],
            "env": {},
            "umask": 0o22,
            "nice": 0,
            "rlimits": {},
            "cpus": [100_000],
            "ignored": [],
        }
        payload = json.dumps(request).encode()
        cwd = os.open(".", os.O_PATH | os.O_DIRECTORY)
        socket.send_fds(sock, [len(payload).to_bytes(4, "big")], [0, 1, 2, cwd])
        os.close(cwd)
        sock.sendall(payload)
        answer = json.loads(sock.makefile("rb").readline())
    assert answer["declined"].startswith("cannot take the caller's settings: ")


def test_status_does_not_keep_a_server_awake_and_lists_one_stopping(
    server: None, make_project: Callable[..., Project]
) -> None:
    first = float(_status()["idle_s"])  # type: ignore[arg-type]
    time.sleep(1.0)
    assert float(_status()["idle_s"]) >= first + 1.0  # type: ignore[arg-type]
    project = make_project(templates=None)
    with _waiting_build(project) as proc:
        _cli("server", "stop")
        listed = _cli("server", "status").stdout
        assert "(stopping: it exits when its running builds end): " in listed
        assert "1 running" in listed
    proc.communicate(timeout=60)
    _await(lambda: _cli("server", "status").stdout == "no build server runs\n", 30, "the exit")


def test_servers_of_two_import_paths_serve_side_by_side(server: None, tmp_path: Path) -> None:
    plain = _status()
    other = _env(PYTHONPATH=str(tmp_path))
    command = [sys.executable, "-m", "runtime.cli"]
    subprocess.run([*command, "build", "--state", "/nonexistent/x.json"], cwd=REPO, env=other)

    def other_status() -> list[dict[str, object]]:
        done = subprocess.run(
            [*command, "server", "status", "--json"], cwd=REPO, env=other, capture_output=True
        )
        servers: list[dict[str, object]] = json.loads(done.stdout.splitlines()[-1])["servers"]
        return servers

    _await(lambda: bool(other_status()), 60, "the other import path's server")
    time.sleep(1.0)  # it has warmed up: an older-code server of its own path would be stopped
    assert _status()["pid"] == plain["pid"]
    subprocess.run([*command, "server", "stop"], cwd=REPO, env=other, check=True)


def test_a_deleted_working_directory_is_named(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f"cd {gone} && rmdir {gone} && {sys.executable} -m runtime.cli build --state x.json"
    done = _shell(script, tmp_path)
    assert done.returncode == 2
    assert done.stderr == "rsi: error: the current directory was deleted; cd to an existing one\n"
