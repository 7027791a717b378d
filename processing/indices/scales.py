"""Air-quality scales: class thresholds per pollutant, labels and colours.

Sources (docs/indices.md): the ATMO index of the arrêté du 10 juillet 2020 relatif à l'indice de
la qualité de l'air ambiant (annexe), and the European Air Quality Index of the European
Environment Agency (bands revised in 2024).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

POLLUTANTS: Final[tuple[str, ...]] = ("pm25", "pm10", "no2", "o3", "so2")


@dataclass(frozen=True, slots=True)
class Scale:
    """A six-class scale: class ``k`` (1..6) holds values up to ``upper[pollutant][k-1]``.

    Upper bounds are inclusive: a value exactly at a threshold belongs to the lower (better)
    class, as the arrêté's integer ranges (``0-10``, ``11-20``...) read.
    """

    name: str
    labels: tuple[str, ...]
    colors: tuple[str, ...]
    upper: dict[str, tuple[float, ...]]
    round_to_integer: bool
    """Round concentrations to the nearest µg/m³ before classing (the arrêté's ranges are
    integers, so 10.4 is "10" and bon, 10.6 is "11" and moyen)."""

    def sub_index(self, pollutant: str, value: pl.Expr) -> pl.Expr:
        """The class (Int64 1..6, null for a null value) of concentrations of ``pollutant``."""
        bounds = self.upper[pollutant]
        if self.round_to_integer:
            # Round half up: polars' round() is half-to-even, which would class 10.5 as bon.
            value = (value + 0.5).floor()
        expr = pl.lit(len(bounds) + 1, dtype=pl.Int64)
        for position, bound in reversed(list(enumerate(bounds, start=1))):
            expr = pl.when(value <= bound).then(pl.lit(position, dtype=pl.Int64)).otherwise(expr)
        return pl.when(value.is_not_null()).then(expr)

    def label(self, index: pl.Expr) -> pl.Expr:
        """The label of an index expression (null for null)."""
        return index.replace_strict(
            list(range(1, 7)), list(self.labels), default=None, return_dtype=pl.String
        )

    def color(self, index: pl.Expr) -> pl.Expr:
        """The ``#RRGGBB`` colour of an index expression (null for null)."""
        return index.replace_strict(
            list(range(1, 7)), list(self.colors), default=None, return_dtype=pl.String
        )


ATMO: Final = Scale(
    name="ATMO",
    labels=("bon", "moyen", "dégradé", "mauvais", "très mauvais", "extrêmement mauvais"),
    # The arrêté gives them in RGB: (80,240,230) (80,204,170) (240,230,65) (255,80,80)
    # (150,0,50) (135,33,129).
    colors=("#50F0E6", "#50CCAA", "#F0E641", "#FF5050", "#960032", "#872181"),
    upper={
        "pm25": (10, 20, 25, 50, 75),  # daily mean
        "pm10": (20, 40, 50, 100, 150),  # daily mean
        "no2": (40, 90, 120, 230, 340),  # daily maximum of hourly means
        "o3": (50, 100, 130, 240, 380),  # daily maximum of hourly means
        "so2": (100, 200, 350, 500, 750),  # daily maximum of hourly means
    },
    round_to_integer=True,
)

EAQI: Final = Scale(
    name="EAQI",
    labels=("good", "fair", "moderate", "poor", "very poor", "extremely poor"),
    colors=("#50F0E6", "#50CCAA", "#F0E641", "#FF5050", "#960032", "#7D2181"),
    upper={
        "pm25": (5, 15, 50, 90, 140),  # 24-hour running mean
        "pm10": (15, 45, 120, 195, 270),  # 24-hour running mean
        "no2": (10, 25, 60, 100, 150),  # hourly mean
        "o3": (60, 100, 120, 160, 180),  # hourly mean
        "so2": (20, 40, 125, 190, 275),  # hourly mean
    },
    round_to_integer=False,
)
