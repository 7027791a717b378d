"""The deployment as an operator runs it: the image built, the compose stack started with podman,
the simulated fleet published through the broker with each commune's own credentials, and what
staff and analysts see checked through the dashboard's API.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from smartcity.broker_auth import derive_password
from smartcity.client import Client
from tests.servers import free_port, wait_until
from tests.stack import PLATFORM_IMAGE, Stack, build_images, missing_tools

pytestmark = pytest.mark.slow

COMMUNE = "78498"
ANALYST = "analyst"
SERVICE_USER_UID = "10001"
PUBLISHED = re.compile(r"published (\d+)/(\d+) messages \((\d+) readings\), acknowledged (\d+)")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    missing = missing_tools()
    if missing:
        pytest.fail(
            f"the stack test runs the compose stack with podman: apt-get install {' '.join(missing)} "
            "(./dev test does)",
            pytrace=False,
        )
    build_images()
    env = {
        "SMARTCITY_IMAGE": PLATFORM_IMAGE,
        "INFLUXDB_ADMIN_PASSWORD": secrets.token_hex(12),
        "INFLUXDB_TOKEN": secrets.token_hex(32),
        "SMARTCITY_BROKER_SECRET": secrets.token_hex(16),
        "SMARTCITY_INGEST_MQTT_PASSWORD": secrets.token_hex(16),
        "SMARTCITY_DASHBOARD_SECRET": secrets.token_hex(32),
        "MQTT_PORT": str(free_port()),
        "DASHBOARD_PORT": str(free_port()),
    }
    running = Stack(project=f"sctest{secrets.token_hex(3)}", env=env)

    def first_user() -> None:
        # As docs/deploy.md has the operator do: the dashboard serves no one until a user exists.
        password = secrets.token_hex(12) + "\n"
        add_user = ["dashboard", "add-user", ANALYST, f"--communes={COMMUNE}", "--password-stdin"]
        running.compose("run", "--rm", "--no-deps", "-T", "dashboard", *add_user, stdin=password)

    try:
        running.up(before={"dashboard": first_user})
        yield running
    finally:
        running.down()


def publish(stack: Stack, *, start: datetime, duration: str) -> int:
    """Publish the commune's simulated fleet over ``duration`` from ``start`` with its gateway's
    credentials, as fast as the broker takes it; the number of readings acknowledged."""
    username = f"gw-{COMMUNE}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "smartcity.cli",
            "simulate",
            "--host=127.0.0.1",
            f"--port={stack.env['MQTT_PORT']}",
            f"--username={username}",
            f"--password={derive_password(stack.env['SMARTCITY_BROKER_SECRET'], username)}",
            f"--communes={COMMUNE}",
            "--faults=none",
            f"--start={start.isoformat()}",
            f"--duration={duration}",
            "--as-fast-as-possible",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    counts = PUBLISHED.findall(result.stdout)
    assert counts, result.stdout
    published, messages, readings, acknowledged = map(int, counts[-1])
    assert published == messages == acknowledged, result.stdout
    return readings


def stored(client: Client, start: datetime) -> int:
    """Readings of every family of the commune stored since ``start``."""
    total = 0
    for family in ("air_quality", "traffic", "building", "camera", "network"):
        frame = client.readings(family, commune=COMMUNE, start=start, end=datetime.now(UTC))
        total += frame.height
    return total


def test_the_stack_stores_aggregates_and_alerts_and_loses_nothing_when_ingest_restarts(stack: Stack) -> None:
    # The services run as the image's unprivileged user, with the compiled kernels baked in.
    assert stack.exec("process", "id", "-u").strip() == SERVICE_USER_UID
    assert stack.exec("process", "sh", "-c", 'ls "$NUMBA_CACHE_DIR" | wc -l').strip() != "0"

    token_out = stack.exec("dashboard", "smartcity", "dashboard", "add-token", ANALYST)
    token = token_out.strip().splitlines()[-1].split()[-1]
    client = Client(f"http://127.0.0.1:{stack.env['DASHBOARD_PORT']}", token)

    # Forty minutes of history that stops twelve minutes ago: readings, aggregates, and devices
    # that have gone silent, which processing finds offline and the alert rules fire on.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=40)
    first = publish(stack, start=start, duration="28m")
    wait_until(lambda: stored(client, start) >= first, timeout=120, interval=2, what="readings in the store")
    assert stored(client, start) == first

    wait_until(
        lambda: client.aggregates("air_quality", communes=[COMMUNE], start="-1h", every="1m").height > 0,
        timeout=180,
        interval=3,
        what="minute aggregates",
    )
    wait_until(
        lambda: client.alerts(communes=[COMMUNE], start="-1h").height > 0,
        timeout=300,
        interval=5,
        what="an alert on the silent devices",
    )

    # The ingestor is killed while the next readings arrive; the broker keeps its session's
    # queue and the spool keeps what was taken, so every reading still lands once.
    stack.podman("kill", "--signal", "KILL", stack.container("ingest"))
    second = publish(stack, start=now - timedelta(minutes=12), duration="5m")
    stack.podman("start", stack.container("ingest"))
    stack.wait_healthy("ingest", timeout=120)
    wait_until(
        lambda: stored(client, start) >= first + second,
        timeout=180,
        interval=2,
        what="the readings published while ingest was down",
    )
    assert stored(client, start) == first + second
