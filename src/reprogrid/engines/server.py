"""A local inference server run by a generate job: a free port on 127.0.0.1, a readiness wait, its log in the
job's log, and no orphan when the job fails, is interrupted or is killed.

The server runs in its own process group (so a terminal's Ctrl-C reaches the job, which then stops it in
order) and is stopped with SIGTERM then SIGKILL to that group on every way out of the job: the context
manager's exit, ``atexit``, SIGTERM/SIGINT/SIGHUP handlers, and, for a SIGKILL of the job itself, the kernel's
parent-death signal (``PR_SET_PDEATHSIG``), which no handler can miss.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from reprogrid.errors import UserError

HOST = "127.0.0.1"
_LIVE: dict[int, subprocess.Popen] = {}  # pid -> server process of this job, stopped on any exit
_HANDLED = False


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def choose_port(port: int, field: str) -> int:
    """The configured port, refused in one line when something already listens there; 0: a free port."""
    if not port:
        return free_port()
    if port_in_use(port):
        raise UserError(f"port {port} on {HOST} is in use; set another port or 0 (a free port)", field=field)
    return int(port)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed when the job process dies, even by SIGKILL
    except OSError:  # not Linux: the handlers and atexit still stop it
        pass


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace`` seconds."""
    _LIVE.pop(proc.pid, None)
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _stop_all(*_args) -> None:
    for proc in list(_LIVE.values()):
        stop(proc, grace=3.0)


def _on_signal(signum, frame) -> None:
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _HANDLED
    if _HANDLED:
        return
    atexit.register(_stop_all)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread: atexit and the parent-death signal remain
            pass
    _HANDLED = True


def start(argv: list[str], port: int, ready_path: str, timeout: float, log=print) -> subprocess.Popen:
    """Start ``argv`` (its output into this process's stderr, i.e. the job log) and wait until
    ``http://127.0.0.1:<port><ready_path>`` answers 200; raise with the reason if it exits or times out."""
    _install_handlers()
    sys.stderr.flush()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(), stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent, close_fds=True)
    _LIVE[proc.pid] = proc
    log(f"[server] pid {proc.pid} starting on {HOST}:{port}")
    url, t0 = f"http://{HOST}:{port}{ready_path}", time.time()
    while True:
        if proc.poll() is not None:
            _LIVE.pop(proc.pid, None)
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready (see the log above)")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.time() - t0 > timeout:
            stop(proc)
            raise RuntimeError(f"the server did not answer {url} within {timeout:.0f} s")
        time.sleep(0.5)
    log(f"[server] pid {proc.pid} ready on {HOST}:{port} after {time.time() - t0:.1f} s")
    return proc
