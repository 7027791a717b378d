"""Real servers for tests and benchmarks: Mosquitto and InfluxDB 1.x, each on a free port with a
temporary data directory. No mocks: the platform is tested against what it runs on.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ingest.metrics import ephemeral_port_range

REPO = Path(__file__).resolve().parent.parent


class ServerUnavailable(RuntimeError):
    """A server could not be started; the message says what to install or look at."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, for a server started later."""
    return free_listening_ports(1)


_HANDED_OUT: set[int] = set()
"""Ports this process gave out: two servers asked for before either binds get different ones."""


def free_listening_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive free ports for servers started later (a worker's
    metrics port), below the kernel's range for outgoing connections: a port of that range may
    become the local port of any connection meanwhile, and its TIME_WAIT then keeps the server
    from binding it for a minute."""
    ephemeral = ephemeral_port_range()
    high = ephemeral.start if ephemeral is not None else 32768
    for _ in range(200):
        first = random.randrange(10000, high - count)
        ports = range(first, first + count)
        if _HANDED_OUT.isdisjoint(ports) and all(_bindable(port) for port in ports):
            _HANDED_OUT.update(ports)
            return first
    raise RuntimeError(f"no {count} consecutive free ports between 10000 and {high}")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.02, what: str = ""
) -> None:
    """Poll ``condition`` until it is true; raise ``TimeoutError`` naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what or condition}")
        time.sleep(interval)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    """A server run as a child process, that can be stopped, killed and started again on the
    same port with the same data (to test outages)."""

    name = "server"
    binary = ""
    debian_package = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        """The command line that starts the server."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server answers."""
        return _port_open(self.port)

    def executable(self) -> str:
        """Path of the server binary, or raise ``ServerUnavailable`` saying what to install."""
        found = shutil.which(self.binary) or shutil.which(self.binary, path="/usr/sbin:/usr/bin")
        if not found:
            raise ServerUnavailable(
                f"{self.binary} not found: install the Debian package {self.debian_package!r} "
                f"(apt-get install {self.debian_package}), or run ./dev test which does"
            )
        return found

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it answers."""
        if self.process and self.process.poll() is None:
            return
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None:
                raise ServerUnavailable(
                    f"{self.name} exited with code {self.process.returncode} at start; "
                    f"its log:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise ServerUnavailable(
                    f"{self.name} did not answer on port {self.port} within {timeout:.0f}s; "
                    f"its log:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server gracefully (SIGTERM), killing it if it does not exit in time."""
        if not self.process or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        wait_until(lambda: not _port_open(self.port), timeout=timeout, what=f"{self.name} port")

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# Lines of docker/mosquitto.conf that only make sense in a deployment.
_DEPLOYMENT_ONLY = (
    "listener",
    "allow_anonymous",
    "password_file",
    "acl_file",
    "persistence_location",
    "log_dest",
)


class Mosquitto(ServerProcess):
    """A real Mosquitto broker configured with the project's docker/mosquitto.conf sizing."""

    name = "mosquitto"
    binary = "mosquitto"
    debian_package = "mosquitto"

    def __init__(self, workdir: Path, extra_config: str = "") -> None:
        super().__init__(workdir)
        self.config_path = workdir / "mosquitto.conf"
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        shipped = (REPO / "docker" / "mosquitto.conf").read_text()
        kept = [line for line in shipped.splitlines() if not line.strip().startswith(_DEPLOYMENT_ONLY)]
        kept += [
            f"persistence_location {data}/",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "log_dest stdout",
            # As root, Mosquitto would switch to the `mosquitto` user, which cannot read the
            # test's private temporary directory.
            "user root" if os.geteuid() == 0 else "",
            extra_config,
        ]
        self.config_path.write_text("\n".join(kept) + "\n")

    def command(self) -> list[str]:
        """``mosquitto -c <config>``."""
        return [self.executable(), "-c", str(self.config_path)]


class Influxd(ServerProcess):
    """A real InfluxDB 1.x server (Debian package ``influxdb``)."""

    name = "influxd"
    binary = "influxd"
    debian_package = "influxdb"

    def __init__(self, workdir: Path, *, auth: bool = False) -> None:
        super().__init__(workdir)
        self.auth = auth
        self.rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "influxdb.conf"
        self.config_path.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{workdir}/meta"

[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "10s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if auth else "false"}
  log-enabled = false
  max-body-size = 0

[logging]
  level = "warn"

[continuous_queries]
  enabled = false
"""
        )

    def command(self) -> list[str]:
        """``influxd run -config <config>``."""
        return [self.executable(), "run", "-config", str(self.config_path)]

    def ready(self) -> bool:
        """``/ping`` answers 204."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
            conn.request("GET", "/ping")
            status = conn.getresponse().status
            conn.close()
        except OSError:
            return False
        return status == 204

    def query(self, q: str, *, database: str | None = None, auth: tuple[str, str] | None = None) -> int:
        """POST an InfluxQL statement to ``/query``; returns the HTTP status (for test set-up)."""
        import base64
        import urllib.parse

        params = {"q": q}
        if database:
            params["db"] = database
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("POST", "/query", body=urllib.parse.urlencode(params), headers=headers)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status
