"""A MONAI Label server with the MediSee app on the user's own machine, as a background process.

The module starts it, streams its log lines into the panel, waits until ``/info/`` answers and
stops it cleanly (SIGINT to its process group, so MONAI Label's own child stops too; then kill).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import requests

from .errors import LocalServerError
from .install import device_choice, has_gpu

LogCallback = Callable[[str], None]


def serve_command(python: str, studies: str | None, port: int, conf: Sequence[tuple[str, str]] = (),
                  host: str = "127.0.0.1", sample_dir: str | None = None) -> list[str]:
    """The launcher of the MediSee app (``monailabel_app.serve``) run by ``python``.

    Without ``studies`` it serves the sample study, generated on first use into ``sample_dir`` (the
    launcher's default is inside the installed package, which is no place for data).
    """
    command = [python, "-m", "monailabel_app.serve", "--host", host, "--port", str(port)]
    if studies:
        command += ["--studies", studies]
    elif sample_dir:
        command += ["--sample-dir", sample_dir]
    for key, value in conf:
        command += ["--conf", key, value]
    return command


def start_local(python: str, studies: str | None, sample_dir: str, on_log: LogCallback) -> tuple[LocalServer, str]:
    """Start a server on a free loopback port, on the GPU if there is one (else the bundled CPU
    model); returns it and the message that says which."""
    device, message = device_choice(has_gpu())
    port = free_port()
    server = LocalServer(serve_command(python, studies, port, [("device", device)], sample_dir=sample_dir),
                         f"http://127.0.0.1:{port}", on_log=on_log)
    server.start()
    return server, message


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalServer:
    """One server process: ``start()``, ``wait_until_ready()``, ``stop()``; ``log_tail()`` for error messages."""

    def __init__(self, command: Sequence[str], url: str, on_log: LogCallback | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.command = list(command)
        self.url = url.rstrip("/")
        self.on_log = on_log
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self._lines: deque[str] = deque(maxlen=200)
        self._reader: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32" else {"start_new_session": True}
        try:
            self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            text=True, errors="replace", bufsize=1, env=self.env, cwd=self.cwd, **group)
        except OSError as err:
            raise LocalServerError(f"{self.command[0]} could not be run ({err.strerror or err})") from None
        self._reader = threading.Thread(target=self._read, name="medisee-server-log", daemon=True)
        self._reader.start()

    def wait_until_ready(self, timeout: float = 300.0, poll: float = 0.5, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Block until ``/info/`` answers 200; the process exiting first, or ``timeout``, is a :class:`LocalServerError`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not cancelled():
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise LocalServerError(f"the server process exited (code {code})", self.log_tail())
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(poll)
        if not cancelled():
            raise LocalServerError(f"it did not answer within {timeout:.0f} s", self.log_tail())

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (Ctrl+Break on Windows) to the process group, then kill; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            self._signal(process, signal.CTRL_BREAK_EVENT if sys.platform == "win32" else signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(process, signal.SIGKILL if sys.platform != "win32" else signal.SIGTERM)
                process.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        return process.returncode

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._lines)[-lines:])

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self._lines.append(line)
            if self.on_log is not None:
                self.on_log(line)
        self.process.stdout.close()

    @staticmethod
    def _signal(process: subprocess.Popen, sig: int) -> None:
        try:
            if sys.platform == "win32":
                process.send_signal(sig)
            else:
                os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
