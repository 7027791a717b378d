"""InfluxStore against a real influxd only: auth, outages, refused lines, retention, provisioning."""

from __future__ import annotations

import base64
import gzip
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import polars as pl
import pytest

from storage.base import TIME
from storage.config import InfluxSettings
from storage.errors import StoreAuthError, StoreError, StoreUnavailable
from storage.influx import InfluxStore
from storage.provision import provision
from tests.servers import Influxd, wait_until
from tests.storage_fixtures import influx_settings, open_influx, shared_influxd

__all__ = ["shared_influxd"]

NOW = datetime.now(UTC).replace(microsecond=0)


def frame(n: int, *, start: datetime = NOW - timedelta(hours=6)) -> pl.DataFrame:
    """``n`` rows, 100 ms apart, over ten devices."""
    idx = pl.int_range(0, n, eager=True)
    times = pl.Series(TIME, [start] * n).dt.cast_time_unit("ns") + (idx * 100).cast(pl.Duration("ms"))
    return pl.DataFrame(
        {
            TIME: times,
            "insee": "78498",
            "device_id": "dev-" + (idx % 10).cast(pl.String),
            "pm25": idx.cast(pl.Float64),
        }
    )


def count(store: InfluxStore, measurement: str) -> int:
    got = store.read(measurement, start=NOW - timedelta(days=1), end=NOW + timedelta(days=1))
    return got.height


# -- authentication ---------------------------------------------------------------------------


@pytest.fixture
def auth_server(influxd_factory: Callable[..., Influxd]) -> Influxd:
    server = influxd_factory(auth=True)
    # InfluxDB 1.x lets the first user be created without credentials, and only an admin.
    assert server.query("CREATE USER admin WITH PASSWORD 'secret' WITH ALL PRIVILEGES") == 200
    return server


def test_auth_on_with_the_right_password(auth_server: Influxd) -> None:
    settings = influx_settings(auth_server, username="admin", password="secret")
    provision(settings)
    store = InfluxStore(settings)
    assert store.write("air_quality", frame(20), tags=["insee", "device_id"]).written == 20
    assert count(store, "air_quality") == 20
    assert store.health().ok


def test_wrong_password_is_a_clear_auth_error(auth_server: Influxd) -> None:
    settings = influx_settings(auth_server, username="admin", password="wrong")
    store = InfluxStore(settings)
    with pytest.raises(StoreAuthError, match=r"refused write with user 'admin': HTTP 401"):
        store.write("air_quality", frame(3), tags=["insee"])
    health = store.health()
    assert not health.ok and "401" in health.detail


def test_no_credentials_on_a_server_that_wants_them(auth_server: Influxd) -> None:
    store = InfluxStore(influx_settings(auth_server))
    with pytest.raises(StoreAuthError, match="no credentials"):
        store.read("air_quality", start=NOW - timedelta(hours=1), end=NOW)


# -- outages ----------------------------------------------------------------------------------


def test_write_while_the_server_is_down_lands_once_it_is_back(
    influxd_factory: Callable[..., Influxd],
) -> None:
    server = influxd_factory()
    store = open_influx(server, max_retries=60, retry_max_backoff_s=0.3)
    server.stop()
    data = frame(12_000)
    result: dict[str, object] = {}
    writer = threading.Thread(
        target=lambda: result.update(report=store.write("air_quality", data, tags=["insee", "device_id"]))
    )
    writer.start()
    server.start()
    writer.join(timeout=60)
    assert not writer.is_alive()
    report = result["report"]
    assert getattr(report, "written", None) == data.height
    assert count(store, "air_quality") == data.height


def test_server_killed_mid_write_then_restarted_loses_nothing(
    influxd_factory: Callable[..., Influxd],
) -> None:
    server = influxd_factory()
    retries: list[float] = []
    settings = influx_settings(server, batch_size=1000, max_retries=60, retry_max_backoff_s=0.3)
    provision(settings)

    def back_off(seconds: float) -> None:
        retries.append(seconds)
        time.sleep(seconds)

    store = InfluxStore(settings, sleep=back_off)
    posted = 0
    restarter: list[threading.Thread] = []
    original = store.post_lines

    def post_then_crash(params: dict[str, str], body: bytes | memoryview) -> object:
        nonlocal posted
        response = original(params, body)
        posted += 1
        if posted == 3:  # the server dies after the third of ten batches...
            server.kill()
            restarter.append(threading.Thread(target=server.start))
            restarter[0].start()  # ...and comes back while the writer retries.
        return response

    store.post_lines = post_then_crash  # type: ignore[assignment,method-assign]
    data = frame(10_000)
    report = store.write("air_quality", data, tags=["insee", "device_id"])
    restarter[0].join(timeout=60)
    assert retries, "the write never had to retry: the outage was not exercised"
    assert report.written == data.height and not report.rejected
    assert count(store, "air_quality") == data.height


def test_unreachable_server_raises_store_unavailable_after_the_retries() -> None:
    from tests.servers import free_port

    settings = InfluxSettings(url=f"http://127.0.0.1:{free_port()}", max_retries=2, retry_backoff_s=0.01)
    waits: list[float] = []
    store = InfluxStore(settings, sleep=waits.append)
    with pytest.raises(StoreUnavailable, match="gave up after 3 attempts"):
        store.write("air_quality", frame(5), tags=["insee"])
    assert len(waits) == 2 and waits[1] > waits[0] / 2


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers the first writes 503 (with Retry-After), then 204; records the bodies."""

    answers: ClassVar[list[tuple[int, dict[str, str]]]] = []
    bodies: ClassVar[list[bytes]] = []
    authorizations: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        type(self).authorizations.append(self.headers.get("Authorization"))
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).bodies.append(body)
        status, headers = type(self).answers.pop(0) if type(self).answers else (204, {})
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def flaky_server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_429_and_503_are_retried_honouring_retry_after(flaky_server: str) -> None:
    _Flaky.bodies = []
    _Flaky.answers = [(503, {"Retry-After": "0.25"}), (429, {"Retry-After": "2"})]
    waits: list[float] = []
    store = InfluxStore(InfluxSettings(url=flaky_server, database="db/rp"), sleep=waits.append)
    data = frame(3)
    report = store.write("air_quality", data, tags=["insee", "device_id"])
    assert report.written == 3
    assert waits == [0.25, 2.0]
    assert len(_Flaky.bodies) == 3 and len(set(_Flaky.bodies)) == 1
    assert _Flaky.bodies[0].count(b"\n") == 3


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ({"token": "t0k3n"}, "Token t0k3n"),
        ({"username": "u", "password": "p:w"}, "Basic " + base64.b64encode(b"u:p:w").decode()),
        ({}, None),
    ],
)
def test_credentials_are_sent_as_the_v1_api_expects(
    flaky_server: str, credentials: dict[str, str], expected: str | None
) -> None:
    _Flaky.answers, _Flaky.authorizations = [], []
    store = InfluxStore(InfluxSettings(url=flaky_server, database="bucket/rp", **credentials))
    store.write("air_quality", frame(2), tags=["insee"])
    assert _Flaky.authorizations == [expected]


# -- refused lines ----------------------------------------------------------------------------


def test_refused_line_in_a_batch_is_reported_and_the_others_land(shared_influxd: Influxd) -> None:
    store = open_influx(shared_influxd)
    # InfluxDB checks field types per shard (a UTC day under this retention policy): both
    # writes go into the same day whatever the hour the test runs at.
    day = NOW.replace(hour=0, minute=0, second=0)
    base = frame(10, start=day + timedelta(minutes=1))
    store.write("air_quality", base.with_columns(pl.col("pm25").alias("no2")), tags=["insee", "device_id"])
    later = frame(10, start=day + timedelta(minutes=2))
    conflicting = later.with_columns(
        pl.when(pl.int_range(0, 10).is_in([3, 7])).then(pl.lit(5, dtype=pl.Int64)).alias("no2")
    )
    report = store.write("air_quality", conflicting, tags=["insee", "device_id"])
    assert [r.row for r in report.rejected] == [3, 7]
    assert all("type conflict" in r.reason for r in report.rejected)
    assert report.written == 8
    assert count(store, "air_quality") == 10 + 8


def test_points_beyond_the_retention_are_reported(shared_influxd: Influxd) -> None:
    store = open_influx(shared_influxd)
    old = frame(4, start=NOW - timedelta(days=40))
    recent = frame(4, start=NOW - timedelta(hours=1))
    report = store.write("air_quality", pl.concat([old, recent]), tags=["insee", "device_id"])
    assert [r.row for r in report.rejected] == [0, 1, 2, 3]
    assert "retention" in report.rejected[0].reason
    # Aggregates are kept five years: the same old rows land there.
    assert not store.write("air_quality_1d", old, tags=["insee", "device_id"]).rejected


def test_missing_database_says_to_run_storage_init(shared_influxd: Influxd) -> None:
    store = InfluxStore(influx_settings(shared_influxd))
    with pytest.raises(StoreError, match="smartcity storage init"):
        store.write("air_quality", frame(2), tags=["insee"])
    with pytest.raises(StoreError, match="smartcity storage init"):
        store.read("air_quality", start=NOW - timedelta(hours=1), end=NOW)


# -- provisioning and layout ------------------------------------------------------------------


def test_provisioning_is_idempotent_and_follows_the_settings(shared_influxd: Influxd) -> None:
    settings = influx_settings(shared_influxd)
    first = provision(settings)
    assert any("created database" in line for line in first)
    assert any("already in place" in line for line in provision(settings))
    changed = provision(settings.model_copy(update={"raw_retention_days": 7}))
    assert changed == ["changed retention policy 'raw' to 7 days"]
    store = InfluxStore(settings)
    policies = {
        row[0]: row[1]
        for s in store.query_json(f'SHOW RETENTION POLICIES ON "{settings.database}"')
        for row in s["values"]
    }
    assert policies["raw"] == "168h0m0s" and policies["aggregates"] == f"{5 * 365 * 24}h0m0s"


def test_raw_readings_and_aggregates_live_in_their_retention_policies(shared_influxd: Influxd) -> None:
    store = open_influx(shared_influxd)
    store.write("air_quality", frame(5), tags=["insee", "device_id"])
    store.write("air_quality_1h", frame(3), tags=["insee", "device_id"])
    db = store.database
    where = "WHERE time > 0"
    raw = store.query_json(f'SELECT count(*) FROM "{db}"."raw"."air_quality" {where}')
    agg = store.query_json(f'SELECT count(*) FROM "{db}"."aggregates"."air_quality_1h" {where}')
    assert raw[0]["values"][0][1] == 5 and agg[0]["values"][0][1] == 3
    assert not store.query_json(f'SELECT count(*) FROM "{db}"."aggregates"."air_quality" {where}')


def test_health_reports_the_server_version(shared_influxd: Influxd) -> None:
    store = open_influx(shared_influxd)
    health = store.health()
    assert health.ok and health.backend == "influxdb"
    assert health.version == store.version().text and health.version.startswith("1.")


def test_health_of_an_unreachable_server_does_not_raise() -> None:
    from tests.servers import free_port

    health = InfluxStore(InfluxSettings(url=f"http://127.0.0.1:{free_port()}")).health()
    assert not health.ok and "cannot reach" in health.detail


def test_large_write_goes_in_batches_and_reads_back(shared_influxd: Influxd) -> None:
    store = open_influx(shared_influxd, batch_size=5000)
    data = frame(60_000)
    assert store.write("air_quality", data, tags=["insee", "device_id"]).written == data.height
    wait_until(lambda: count(store, "air_quality") == data.height, timeout=10, what="60k rows readable")


def _policy_counts(
    store: InfluxStore, measurement: str, policies: tuple[str, ...] = ("raw", "minute", "aggregates")
) -> dict[str, int]:
    """Rows of ``measurement`` in each retention policy of the store's database."""
    found = {}
    for policy in policies:
        series = store.query_json(
            f'SELECT count(*) FROM "{store.database}"."{policy}"."{measurement}" WHERE time > 0'
        )
        found[policy] = int(series[0]["values"][0][1]) if series else 0
    return found


def test_minute_aggregates_live_in_a_shorter_policy_of_their_own(shared_influxd: Influxd) -> None:
    store = open_influx(shared_influxd)
    policies = {
        row[0]: row[1]
        for s in store.query_json(f'SHOW RETENTION POLICIES ON "{store.database}"')
        for row in s["values"]
    }
    assert policies["minute"] == f"{35 * 24}h0m0s" and policies["aggregates"] == f"{5 * 365 * 24}h0m0s"
    for measurement in ("air_quality_1m", "air_quality_1m_commune", "air_quality_15m"):
        store.write(measurement, frame(4), tags=["insee", "device_id"])
    assert _policy_counts(store, "air_quality_1m") == {"raw": 0, "minute": 4, "aggregates": 0}
    assert _policy_counts(store, "air_quality_1m_commune") == {"raw": 0, "minute": 4, "aggregates": 0}
    assert _policy_counts(store, "air_quality_15m") == {"raw": 0, "minute": 0, "aggregates": 4}
    assert count(store, "air_quality_1m") == 4  # reads find them where writes put them
    old = frame(3, start=NOW - timedelta(days=40))
    refused = store.write("air_quality_1m", old, tags=["insee", "device_id"])
    assert [r.row for r in refused.rejected] == [0, 1, 2] and "retention" in refused.rejected[0].reason
    assert not store.write("air_quality_15m", old, tags=["insee", "device_id"]).rejected
    assert store.retention("air_quality_1m") == timedelta(days=35)
    assert store.retention("air_quality_15m") == timedelta(days=5 * 365)
    assert store.retention("air_quality") == timedelta(days=30)


def test_without_a_minute_retention_they_stay_with_the_aggregates(shared_influxd: Influxd) -> None:
    store = open_influx(shared_influxd, minute_retention_days=None)
    policies = {
        row[0]
        for s in store.query_json(f'SHOW RETENTION POLICIES ON "{store.database}"')
        for row in s["values"]
    }
    assert "minute" not in policies
    store.write("air_quality_1m", frame(4, start=NOW - timedelta(days=40)), tags=["insee", "device_id"])
    assert _policy_counts(store, "air_quality_1m", ("raw", "aggregates")) == {"raw": 0, "aggregates": 4}
    assert store.retention("air_quality_1m") == timedelta(days=5 * 365)


def test_storage_init_moves_recent_minute_aggregates_of_an_older_layout(shared_influxd: Influxd) -> None:
    settings = influx_settings(shared_influxd, minute_retention_days=None)
    provision(settings)
    before = InfluxStore(settings)
    recent = frame(6, start=NOW - timedelta(days=2)).with_columns(
        pl.lit(3, dtype=pl.Int64).alias("pm25_count")
    )
    old = frame(2, start=NOW - timedelta(days=100)).with_columns(
        pl.lit(1, dtype=pl.Int64).alias("pm25_count")
    )
    before.write("air_quality_1m_commune", pl.concat([old, recent]), tags=["insee", "device_id"])
    before.write("air_quality_15m", recent, tags=["insee", "device_id"])

    upgraded = settings.model_copy(update={"minute_retention_days": 35})
    done = provision(upgraded)
    assert "created retention policy 'minute' (35 days)" in done
    assert "copied 6 minute aggregates of the last 35 days to 'minute'" in done
    after = InfluxStore(upgraded)
    moved = after.read("air_quality_1m_commune", start=NOW - timedelta(days=35), end=NOW + timedelta(days=1))
    assert moved.sort(TIME, "device_id").equals(recent.sort(TIME, "device_id").select(moved.columns))
    assert moved.schema["pm25_count"] == pl.Int64 and moved.schema["device_id"] == pl.String
    assert _policy_counts(after, "air_quality_15m") == {"raw": 0, "minute": 0, "aggregates": 6}
    assert any("already in place" in line for line in provision(upgraded))  # copied once
