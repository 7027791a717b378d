"""What one flush hands to the store: a frame per measurement, in the Store frame convention."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True, slots=True)
class Table:
    """Rows of one measurement, with the names of its tag columns."""

    measurement: str
    frame: pl.DataFrame
    tags: tuple[str, ...]

    @property
    def rows(self) -> int:
        """Number of rows."""
        return self.frame.height
