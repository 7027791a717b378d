"""The platform of a soak: real Mosquitto and influxd, and the ``smartcity`` services as the
operator runs them (InfluxDB), or the embedded store in one process (DuckDB).

DuckDB lets one process own its file, so ``--store duckdb`` runs ingest, processing, alerts and
the dashboards in the one gunicorn worker, as ``smartcity demo`` does (``bench.soak.embedded``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from bench.ingest_common import REPO
from smartcity.commands.ingest import worker_count
from smartcity.settings import load_settings
from storage.config import InfluxSettings
from storage.provision import provision
from tests.servers import Influxd, Mosquitto, free_listening_ports, free_port, wait_until

EXAMPLES = REPO / "examples"
DASHBOARD_USER = "soak-staff"


def soak_rules(mailbox_url: str, probe_rule: str, *, offline: bool = False) -> str:
    """examples/alerts.toml delivering to ``mailbox_url``, plus the probe rule; its offline
    rules only when ``offline``: a fleet replaying a past day would look offline on the real
    clock, one at real time (the knee) is watched as in production (a silence check of every
    device of the fleet at every evaluation)."""
    text = (EXAMPLES / "alerts.toml").read_text("utf-8").replace("http://127.0.0.1:8099/", mailbox_url)
    head, *rules = text.split("\n[[rules]]\n")
    kept = [rule for rule in rules if offline or 'condition = "offline"' not in rule]
    return "\n[[rules]]\n".join([head, *kept]) + "\n" + probe_rule


def secret_names(rules: str) -> list[str]:
    """The environment variables the rules' channels read their secrets from."""
    return sorted(set(re.findall(r'secret_env\s*=\s*"(\w+)"', rules)))


@dataclass
class Platform:
    """Every process of a soak; ``components`` maps a name to the root pid to sample."""

    workdir: Path
    store: str
    mosquitto: Mosquitto
    influxd: Influxd | None
    env: dict[str, str]
    dashboard_url: str
    dashboard_password: str
    ingest_metrics_port: int
    ingest_workers: int
    """``smartcity ingest`` processes (1 on the embedded store: its one ingestor)."""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    communes_file: Path | None = None
    """The commune registry every process reads (None: the shipped one)."""

    @property
    def components(self) -> dict[str, int]:
        """Component name -> root pid."""
        found = {"mosquitto": self._pid(self.mosquitto)}
        if self.influxd is not None:
            found["influxd"] = self._pid(self.influxd)
        found.update({name: process.pid for name, process in self.processes.items()})
        return found

    @staticmethod
    def _pid(server: Mosquitto | Influxd) -> int:
        assert server.process is not None
        return server.process.pid

    def failed(self) -> list[str]:
        """Components that exited while they should run."""
        return [f"{name} (exit {p.returncode})" for name, p in self.processes.items() if p.poll() is not None]

    def stop(self) -> dict[str, int | None]:
        """Stop the services, then the servers; the services' exit codes."""
        codes = self.stop_services()
        self.stop_servers()
        return codes

    def stop_services(self) -> dict[str, int | None]:
        """SIGTERM every service and wait for it; their exit codes (None: killed)."""
        codes: dict[str, int | None] = {}
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(120)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                codes[name] = None
        return codes

    def stop_servers(self) -> None:
        """Kill Mosquitto and influxd."""
        self.mosquitto.kill()
        if self.influxd is not None:
            self.influxd.kill()

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last lines of a service's log."""
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def start_platform(
    workdir: Path,
    store: str,
    *,
    mailbox_url: str,
    probe_rule: str,
    webhook_secret: str,
    process_interval_s: float | None,
    alerts_interval_s: float | None,
    sightings: Path,
    communes_file: Path | None = None,
    offline_rules: bool = False,
    ingest_workers: int | None = None,
) -> Platform:
    """Start the servers and every service, serving the communes of ``communes_file`` (None: the
    shipped registry's) with ``ingest_workers`` ingest processes (None: as ``smartcity ingest``
    decides from the settings, one per core on Mosquitto); return when the dashboards answer."""
    workdir.mkdir(parents=True, exist_ok=True)
    mosquitto = Mosquitto(workdir / "mosquitto")
    mosquitto.start()
    influxd = None
    data = workdir / "var"
    data.mkdir(exist_ok=True)
    rules = soak_rules(mailbox_url, probe_rule, offline=offline_rules)
    (data / "alerts.toml").write_text(rules, "utf-8")
    (data / "devices.csv").write_text((EXAMPLES / "devices.csv").read_text("utf-8"), "utf-8")
    metrics_port = free_listening_ports(8)
    dashboard_port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SMARTCITY_DATA_DIR": str(data),
        "SMARTCITY_MQTT__HOST": "127.0.0.1",
        "SMARTCITY_MQTT__PORT": str(mosquitto.port),
        "SMARTCITY_INGEST__CLIENT_ID": "soak-ingest",
        "SMARTCITY_INGEST__METRICS_PORT": str(metrics_port),
        "SMARTCITY_INGEST__SPOOL_DIR": str(data / "spool"),
        "SMARTCITY_INGEST__DEADLETTER_FILE": str(data / "deadletter.jsonl"),
        "SMARTCITY_ALERTS__RULES_FILE": str(data / "alerts.toml"),
        "SMARTCITY_ALERTS__OUTBOX_DIR": str(data / "outbox"),
        "SMARTCITY_ALERTS__STATE_FILE": str(data / "alerts_state.json"),
        "SMARTCITY_ALERTS__AUDIT_FILE": str(data / "alerts_audit.jsonl"),
        "SMARTCITY_DASHBOARD__USERS_FILE": str(data / "users.toml"),
        "SMARTCITY_DASHBOARD__PORT": str(dashboard_port),
        "SMARTCITY_DASHBOARD__SECRET_KEY": secrets.token_hex(16),
        **{name: webhook_secret for name in secret_names(rules)},
    }
    if communes_file is not None:
        env["SMARTCITY_COMMUNES_FILE"] = str(communes_file)
    if ingest_workers is not None:
        env["SMARTCITY_INGEST__WORKERS"] = str(ingest_workers)
    if process_interval_s:
        env["SMARTCITY_PROCESSING__INTERVAL_S"] = str(process_interval_s)
    if alerts_interval_s:
        env["SMARTCITY_ALERTS__INTERVAL_S"] = str(alerts_interval_s)
    if store == "influxdb":
        influxd = Influxd(workdir / "influxd")
        influxd.start()
        influx = InfluxSettings(url=influxd.url, database="smartcity")
        provision(influx)
        env.update(
            {
                "SMARTCITY_STORE__BACKEND": "influxdb",
                "SMARTCITY_STORE__INFLUXDB__URL": influxd.url,
                "SMARTCITY_STORE__INFLUXDB__DATABASE": influx.database,
            }
        )
    else:
        env.update(
            {
                "SMARTCITY_STORE__BACKEND": "duckdb",
                "SMARTCITY_STORE__DUCKDB__PATH": str(data / "smartcity.duckdb"),
            }
        )
    password = secrets.token_urlsafe(12)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "smartcity.cli",
            "dashboard",
            "add-user",
            DASHBOARD_USER,
            "--communes",
            "*",
            "--password-stdin",
        ],
        input=password.encode() + b"\n",
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    platform = Platform(
        workdir,
        store,
        mosquitto,
        influxd,
        env,
        f"http://127.0.0.1:{dashboard_port}",
        password,
        metrics_port,
        ingest_workers=ingest_worker_count(env) if store == "influxdb" else 1,
        communes_file=communes_file,
    )
    if store == "influxdb":
        commands = {
            "ingest": ["ingest"],
            "process": ["process"],
            "alerts": ["alerts"],
            "dashboard": ["dashboard"],
        }
        for name, args in commands.items():
            platform.processes[name] = _spawn(
                workdir, name, [sys.executable, "-m", "smartcity.cli", *args], env
            )
    else:
        env["SOAK_SIGHTINGS"] = str(sightings)
        platform.processes["platform"] = _spawn(
            workdir, "platform", [sys.executable, "-m", "bench.soak.embedded"], env
        )
    try:
        wait_until(
            lambda: _answers(platform.dashboard_url) or bool(platform.failed()),
            timeout=180,
            what="the dashboards",
        )
    except TimeoutError:
        platform.stop()
        raise
    if platform.failed():
        tails = "\n".join(f"--- {name}\n{platform.log_tail(name)}" for name in platform.processes)
        platform.stop()
        raise RuntimeError(f"a service exited at start: {platform.failed()}\n{tails}")
    return platform


def ingest_worker_count(env: dict[str, str]) -> int:
    """How many processes ``smartcity ingest`` starts with ``env``: its own rule, read the way it
    reads it, so the soak waits for and reads every worker and no other."""
    with mock.patch.dict(os.environ, env, clear=True):
        return worker_count(load_settings())


def _spawn(workdir: Path, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (workdir / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/login", timeout=2) as answer:
            return int(answer.status) == 200
    except OSError:
        return False
