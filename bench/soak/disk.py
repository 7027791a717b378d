"""Disk used per family, raw readings and aggregates, in InfluxDB and in DuckDB.

Neither store reports bytes per measurement here (InfluxDB 1.6 has no ``influx_inspect
report-disk``; DuckDB packs small segments of several tables into one block), so the bytes of
the data directory (per retention policy, TSM and WAL) or of the file are apportioned to the
families by their share of stored values (InfluxDB) or of storage blocks (DuckDB). Said so in
the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from sensors.families import FAMILIES

FAMILY_NAMES = [family.value for family in FAMILIES]


@dataclass(frozen=True)
class FamilyDisk:
    """Bytes of one family on disk."""

    family: str
    raw_bytes: float
    aggregate_bytes: float
    minute_bytes: float = 0.0
    """The part of ``aggregate_bytes`` in 1-minute windows, which retention drops first."""


def directory_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (0 when absent)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _influx_counts(url: str, database: str, policy: str, measurement: str) -> float:
    """Values stored (every field) in the measurements ``measurement`` matches (a regex)."""
    response = httpx.post(
        url + "/query",
        data={"q": f'SELECT count(*) FROM "{policy}"./{measurement}/', "db": database},
        timeout=600,
    )
    response.raise_for_status()
    total = 0.0
    for result in response.json().get("results", []):
        for series in result.get("series", []):
            total += sum(v for v in series["values"][0][1:] if isinstance(v, int | float))
    return total


def _policy_bytes(influxd_dir: Path, database: str, policy: str) -> int:
    """A retention policy's bytes on disk, TSM and WAL (0 when the policy does not exist)."""
    return directory_bytes(influxd_dir / "data" / database / policy) + directory_bytes(
        influxd_dir / "wal" / database / policy
    )


def influx_disk(influxd_dir: Path, url: str, database: str = "smartcity") -> list[FamilyDisk]:
    """Per family: the raw policy's bytes (TSM + WAL) apportioned by values stored, and the
    aggregates and minute policies' likewise (aggregates, indices and anomalies of the family)."""
    out: dict[str, list[float]] = {family: [0.0, 0.0, 0.0] for family in FAMILY_NAMES}
    for slots, policy, pattern in (
        ((0,), "raw", "^{}$"),
        ((1,), "aggregates", "^{}_"),
        ((1, 2), "minute", "^{}_"),
    ):
        total = _policy_bytes(influxd_dir, database, policy)
        counts = {
            family: _influx_counts(url, database, policy, pattern.format(family)) for family in FAMILY_NAMES
        }
        values = sum(counts.values()) or 1.0
        for family in FAMILY_NAMES:
            for slot in slots:
                out[family][slot] += total * counts[family] / values
    return [FamilyDisk(family, raw, agg, minute) for family, (raw, agg, minute) in out.items()]


AGGREGATE_WINDOWS = ("1m", "15m", "1h", "1d")


def influx_aggregate_windows(influxd_dir: Path, url: str, database: str = "smartcity") -> dict[str, float]:
    """The aggregates policy's bytes apportioned to each window (every family and level), and
    to the rest (indices, anomalies, alert events) by values stored: which window the disk goes to.
    The minute policy (docs/storage.md) holds only minute windows: all its bytes count for 1m."""
    total = _policy_bytes(influxd_dir, database, "aggregates")
    counts = {w: _influx_counts(url, database, "aggregates", f"_{w}(_commune)?$") for w in AGGREGATE_WINDOWS}
    counts["other"] = max(_influx_counts(url, database, "aggregates", ".*") - sum(counts.values()), 0.0)
    values = sum(counts.values()) or 1.0
    windows = {name: total * count / values for name, count in counts.items()}
    windows["1m"] += _policy_bytes(influxd_dir, database, "minute")
    return windows


def duckdb_disk(path: Path) -> list[FamilyDisk]:
    """Per family: the file's bytes apportioned by the storage blocks of its raw table and of
    its aggregate tables (``m.<family>_*``). Opens the file read-only: its owner must have exited."""
    import duckdb

    size = path.stat().st_size
    connection = duckdb.connect(str(path), read_only=True)
    try:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'm'"
            ).fetchall()
        ]
        blocks: dict[str, int] = {}
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            row = connection.execute(
                f"SELECT count(DISTINCT block_id) FROM pragma_storage_info('m.{quoted}') WHERE block_id >= 0"
            ).fetchone()
            blocks[table] = int(row[0]) if row else 0
    finally:
        connection.close()
    total = sum(blocks.values()) or 1
    found = []
    for family in FAMILY_NAMES:
        raw = blocks.get(family, 0)
        agg = sum(n for table, n in blocks.items() if table.startswith(family + "_"))
        minute = sum(n for table, n in blocks.items() if table in (f"{family}_1m", f"{family}_1m_commune"))
        found.append(FamilyDisk(family, size * raw / total, size * agg / total, size * minute / total))
    return found
