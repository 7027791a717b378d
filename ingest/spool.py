"""The on-disk spool: batches that could not reach the store wait here, in order, durably.

One batch is one segment file, named by a sequence number so that replay follows arrival order.
A segment holds, for each measurement of the batch, its name, its tag columns and its rows as an
Arrow IPC stream (LZ4-compressed). It is written to a temporary name, fsynced, renamed, and the
directory fsynced: a segment either exists whole or not at all, so a crash mid-write leaves at
worst a ``.tmp`` file (removed at start; its messages were never acknowledged, so the broker
delivers them again).

Layout of a segment::

    b"SCSPOOL1" | u32 tables | per table: u16 len, measurement | u16 len, tags (JSON list)
                                          | u64 len, Arrow IPC stream
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ingest.tables import Table

log = logging.getLogger(__name__)

MAGIC = b"SCSPOOL1"
SUFFIX = ".seg"
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class SpoolFull(Exception):
    """The spool cannot take this batch without going over its size bound."""


class SpoolCorrupt(Exception):
    """A segment cannot be read back (disk damage or a foreign file)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One spooled batch on disk."""

    sequence: int
    path: Path
    size: int


def encode_tables(tables: Sequence[Table]) -> bytes:
    """Serialise a batch into the segment format."""
    out = io.BytesIO()
    out.write(MAGIC)
    out.write(_U32.pack(len(tables)))
    for table in tables:
        name = table.measurement.encode()
        tags = json.dumps(list(table.tags)).encode()
        ipc = io.BytesIO()
        table.frame.write_ipc_stream(ipc, compression="lz4")
        payload = ipc.getvalue()
        out.write(_U16.pack(len(name)) + name)
        out.write(_U16.pack(len(tags)) + tags)
        out.write(_U64.pack(len(payload)))
        out.write(payload)
    return out.getvalue()


def decode_tables(data: bytes) -> list[Table]:
    """Read a batch back from the segment format; ``SpoolCorrupt`` when it is not one."""
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise SpoolCorrupt("not a spool segment (bad magic)")
    try:
        pos = len(MAGIC)
        (count,) = _U32.unpack_from(view, pos)
        pos += _U32.size
        tables: list[Table] = []
        for _ in range(count):
            (length,) = _U16.unpack_from(view, pos)
            pos += _U16.size
            measurement = bytes(view[pos : pos + length]).decode()
            pos += length
            (length,) = _U16.unpack_from(view, pos)
            pos += _U16.size
            tags = tuple(json.loads(bytes(view[pos : pos + length])))
            pos += length
            (length,) = _U64.unpack_from(view, pos)
            pos += _U64.size
            if pos + length > len(view):
                raise SpoolCorrupt("segment is truncated")
            frame = pl.read_ipc_stream(bytes(view[pos : pos + length]))
            pos += length
            tables.append(Table(measurement, frame, tags))
    except (struct.error, UnicodeDecodeError, ValueError, OSError, pl.exceptions.PolarsError) as exc:
        raise SpoolCorrupt(f"segment cannot be read: {exc}") from exc
    if pos != len(view):
        raise SpoolCorrupt("segment has trailing bytes")
    return tables


class Spool:
    """A bounded FIFO of batches on disk that survives restarts.

    One writer thread appends and replays; ``bytes`` and ``batches`` may be read from any thread.
    """

    def __init__(self, directory: Path, max_bytes: int, *, fsync: bool = True) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._fsync = fsync
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):
            # A segment being written when the process died: never acknowledged, so not needed.
            leftover.unlink(missing_ok=True)
        self._segments: deque[Segment] = deque()
        for path in sorted(directory.glob("*" + SUFFIX)):
            try:
                sequence = int(path.stem)
            except ValueError:
                log.warning("spool: ignoring foreign file %s", path)
                continue
            self._segments.append(Segment(sequence, path, path.stat().st_size))
        self._next = self._segments[-1].sequence + 1 if self._segments else 1
        self._bytes = sum(segment.size for segment in self._segments)
        if self._segments:
            log.info(
                "spool: %d batch(es), %d bytes waiting in %s from a previous run",
                len(self._segments),
                self._bytes,
                directory,
            )

    @property
    def bytes(self) -> int:
        """Bytes held on disk."""
        return self._bytes

    @property
    def batches(self) -> int:
        """Batches held on disk."""
        return len(self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    def __bool__(self) -> bool:
        return bool(self._segments)

    def append(self, tables: Sequence[Table]) -> Segment:
        """Write a batch durably at the tail; ``SpoolFull`` when it would exceed ``max_bytes``."""
        data = encode_tables(tables)
        if self._bytes + len(data) > self.max_bytes:
            raise SpoolFull(
                f"spool {self.directory} holds {self._bytes} bytes; a batch of {len(data)} bytes "
                f"would exceed its bound of {self.max_bytes} bytes"
            )
        sequence = self._next
        path = self.directory / f"{sequence:016d}{SUFFIX}"
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
        tmp.rename(path)
        self._sync_directory()
        segment = Segment(sequence, path, len(data))
        with self._lock:
            self._segments.append(segment)
            self._bytes += segment.size
            self._next = sequence + 1
        return segment

    def peek(self) -> Segment | None:
        """The oldest batch, or None when the spool is empty."""
        return self._segments[0] if self._segments else None

    def read(self, segment: Segment) -> list[Table]:
        """The tables of one spooled batch."""
        try:
            data = segment.path.read_bytes()
        except OSError as exc:
            raise SpoolCorrupt(f"{segment.path}: {exc}") from exc
        try:
            return decode_tables(data)
        except SpoolCorrupt as exc:
            raise SpoolCorrupt(f"{segment.path}: {exc}") from exc

    def remove(self, segment: Segment) -> None:
        """Forget the oldest batch once it is safely in the store."""
        with self._lock:
            if not self._segments or self._segments[0] != segment:
                raise ValueError(f"{segment.path} is not the oldest segment of the spool")
            self._segments.popleft()
            self._bytes -= segment.size
        segment.path.unlink(missing_ok=True)

    def quarantine(self, segment: Segment) -> Path:
        """Move an unreadable oldest batch aside (``corrupt/``) so replay can go on; returns where."""
        with self._lock:
            if self._segments and self._segments[0] == segment:
                self._segments.popleft()
                self._bytes -= segment.size
        target = self.directory / "corrupt" / segment.path.name
        target.parent.mkdir(exist_ok=True)
        segment.path.rename(target)
        return target

    def _sync_directory(self) -> None:
        if not self._fsync:
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
