"""Run a Mosquitto broker as a child process.

Used by ``edgeops demo`` when no broker is configured, and by the integration tests, which
each start their own broker on a free port with the configuration they need (plain, or TLS
with client certificates from the fleet CA).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from edgeops.errors import ConfigError, TransportError

_SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` binary, also where ``/usr/sbin`` is not on PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for folder in _SEARCH_PATH:
        candidate = Path(folder) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Poll until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class MosquittoBroker:
    """A Mosquitto process with its own config, port and folder; a context manager.

    ``config`` is the body of a mosquitto.conf without the ``listener`` line for the main
    port, which this class adds (``listener PORT 127.0.0.1``) unless ``config`` already
    names the port with the ``{port}`` placeholder.
    """

    def __init__(
        self,
        config: str = "allow_anonymous true\n",
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        workdir: Path | None = None,
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise ConfigError(
                "mosquitto is not installed (apt-get install mosquitto); ./scripts/test installs it"
            )
        self.binary = binary
        self.host = host
        self.port = port or free_port(host)
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="edgeops-broker-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        body = config.replace("{port}", str(self.port))
        if "{port}" not in config:
            body = f"listener {self.port} {host}\n{body}"
        self.config_path = self.workdir / "mosquitto.conf"
        self.config_path.write_text(body, encoding="utf-8")
        self.log_path = self.workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Start the broker and wait until it accepts connections."""
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise TransportError(
                f"mosquitto did not listen on {self.host}:{self.port} within {timeout:.0f} s; "
                f"log:\n{self.log_text()}"
            )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def restart(self) -> None:
        """Stop and start again on the same port (retained messages persist only if the
        config enables ``persistence``)."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


__all__ = ["MosquittoBroker", "find_mosquitto", "free_port", "wait_for_port"]
