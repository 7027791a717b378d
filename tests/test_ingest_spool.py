"""The on-disk spool: durable, ordered, bounded, and readable after a restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ingest.spool import Spool, SpoolCorrupt, SpoolFull, decode_tables, encode_tables
from ingest.tables import Table


def _table(measurement: str, start: int, rows: int) -> Table:
    frame = pl.DataFrame(
        {
            "time": pl.Series(
                [datetime(2026, 3, 2, tzinfo=UTC)] * rows, dtype=pl.Datetime("ns", "UTC")
            ).dt.offset_by(f"{start}s"),
            "insee": ["78498"] * rows,
            "device_id": [f"aq-{i}" for i in range(start, start + rows)],
            "pm25": [float(i) / 3 for i in range(rows)],
            "count": list(range(rows)),
            "ok": [i % 2 == 0 for i in range(rows)],
            "mode": [None if i % 3 else 'éco "quoted"' for i in range(rows)],
        }
    )
    return Table(measurement, frame, ("insee", "device_id"))


def test_tables_survive_encoding_with_dtypes_nulls_and_unicode() -> None:
    tables = [_table("air_quality", 0, 50), _table("rejected_readings", 7, 3)]
    decoded = decode_tables(encode_tables(tables))
    assert [t.measurement for t in decoded] == ["air_quality", "rejected_readings"]
    for original, back in zip(tables, decoded, strict=True):
        assert back.tags == original.tags
        assert_frame_equal(back.frame, original.frame)


def test_replay_order_and_contents_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10 << 20)
    batches = [[_table("air_quality", n * 10, 10)] for n in range(5)]
    for batch in batches:
        spool.append(batch)
    size = spool.bytes
    reopened = Spool(tmp_path, max_bytes=10 << 20)
    assert reopened.batches == 5
    assert reopened.bytes == size
    for batch in batches:
        segment = reopened.peek()
        assert segment is not None
        assert_frame_equal(reopened.read(segment)[0].frame, batch[0].frame)
        reopened.remove(segment)
    assert reopened.peek() is None
    assert reopened.bytes == 0
    assert not list(tmp_path.glob("*.seg"))


def test_new_segments_after_a_restart_go_behind_the_old_ones(tmp_path: Path) -> None:
    Spool(tmp_path, max_bytes=10 << 20).append([_table("old", 0, 2)])
    spool = Spool(tmp_path, max_bytes=10 << 20)
    spool.append([_table("new", 0, 2)])
    order = []
    while (segment := spool.peek()) is not None:
        order.append(spool.read(segment)[0].measurement)
        spool.remove(segment)
    assert order == ["old", "new"]


def test_full_spool_refuses_a_batch_and_takes_it_once_room_frees(tmp_path: Path) -> None:
    one = encode_tables([_table("air_quality", 0, 100)])
    spool = Spool(tmp_path, max_bytes=2 * len(one) + len(one) // 2)
    spool.append([_table("air_quality", 0, 100)])
    spool.append([_table("air_quality", 0, 100)])
    with pytest.raises(SpoolFull, match="exceed its bound"):
        spool.append([_table("air_quality", 0, 100)])
    assert spool.batches == 2
    oldest = spool.peek()
    assert oldest is not None
    spool.remove(oldest)
    spool.append([_table("air_quality", 0, 100)])
    assert spool.batches == 2
    assert spool.bytes <= spool.max_bytes


def test_a_half_written_segment_from_a_crash_is_discarded(tmp_path: Path) -> None:
    Spool(tmp_path, max_bytes=10 << 20).append([_table("air_quality", 0, 5)])
    (tmp_path / "0000000000000002.tmp").write_bytes(b"SCSPOOL1\x01\x00")
    spool = Spool(tmp_path, max_bytes=10 << 20)
    assert spool.batches == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_a_corrupt_segment_is_reported_and_can_be_moved_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10 << 20)
    segment = spool.append([_table("air_quality", 0, 5)])
    data = segment.path.read_bytes()
    segment.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SpoolCorrupt, match=r"truncated|cannot be read"):
        spool.read(segment)
    moved = spool.quarantine(segment)
    assert moved.exists()
    assert spool.batches == 0
    assert spool.bytes == 0
