"""Warm client processes for the demo: fork them from a parent that already imported the app.

A fresh ``secagg-client`` process spends seconds importing torch and scikit-learn before it can
join a round; the demo starts N of them and restarts every client it kills, so on a small
machine those cold starts dominated its run time. ``ForkServer`` forks one helper process (the
"zygote", as Android calls it) from the demo *before* the demo starts its event loop, after it
has imported and warmed up the app; every client is then forked from the helper and runs
``transport.cli.client_main`` with the usual arguments. Each client is a real process with
its own sockets, which the demo SIGKILLs like any other.

POSIX only (``os.fork``); elsewhere ``ForkServer.available()`` is False and the demo starts
clients as fresh processes. The helper runs no event loop and no threads, so forking it is safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence


class ForkServer:
    """A helper process that forks client processes on request.

    Args:
        run: what a forked child runs, ``run(argv) -> exit status`` (e.g. ``client_main``).
    """

    def __init__(self, run: Callable[[Sequence[str]], int]) -> None:
        requests_read, self._requests = os.pipe()
        self._replies, replies_write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the helper
            os.close(self._requests)
            os.close(self._replies)
            code = 1
            try:
                _serve(requests_read, replies_write, run)
                code = 0
            finally:
                os._exit(code)
        os.close(requests_read)
        os.close(replies_write)
        self.pid = pid
        self._reader = os.fdopen(self._replies, "r")
        self._writer = os.fdopen(self._requests, "w", buffering=1)

    @staticmethod
    def available() -> bool:
        """True where the demo can fork warm clients (POSIX, not macOS: forking there after
        importing system frameworks is unsafe)."""
        return hasattr(os, "fork") and sys.platform != "darwin"

    def spawn(self, argv: Sequence[str], log_path: str) -> int:
        """Fork a client running ``run(argv)`` with stdout and stderr appended to ``log_path``;
        its pid."""
        self._writer.write(json.dumps({"argv": list(argv), "log": log_path}) + "\n")
        reply = self._reader.readline()
        if not reply:
            raise RuntimeError("the fork server exited")
        return int(reply)

    def close(self) -> None:
        """Stop the helper (its clients keep running; stop them with ``kill``)."""
        with contextlib.suppress(OSError):
            self._writer.close()
        with contextlib.suppress(OSError):
            self._reader.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def is_running(pid: int) -> bool:
    """True while process ``pid`` (a client forked by a ``ForkServer``) exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - the pid was reused by another user's process
        return False
    return True


def kill(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL a forked client and wait (up to ``timeout`` s) until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.001)


def _serve(requests: int, replies: int, run: Callable[[Sequence[str]], int]) -> None:
    # Children are reaped by the kernel (SIGCHLD ignored), so a killed client leaves no zombie
    # and ``is_running`` sees it gone at once.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the demo stops the helper by closing the pipe
    with os.fdopen(requests, "r") as reader, os.fdopen(replies, "w", buffering=1) as writer:
        for line in reader:
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                reader.close()
                writer.close()
                _child(request["argv"], request["log"], run)
            writer.write(f"{pid}\n")


def _child(argv: Sequence[str], log_path: str, run: Callable[[Sequence[str]], int]) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.close(null_fd)
        code = run(argv)
    except BaseException:  # the child must never return into the helper's loop
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
