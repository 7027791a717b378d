"""CSV files as a spreadsheet in the user's language opens them without an import wizard.

French Excel splits columns on ``;`` and reads ``6,4`` as a number; it takes a file for UTF-8
only when it starts with a byte-order mark. Times are written in Paris time, as on the page.
"""

from __future__ import annotations

import polars as pl

from dashboards.i18n import PARIS, Language, t
from storage.base import TIME

BOM = "\ufeff"
_TIME_FORMAT = {"fr": "%d/%m/%Y %H:%M:%S", "en": "%Y-%m-%d %H:%M:%S"}


def spreadsheet_csv(frame: pl.DataFrame, lang: Language, decimals: dict[str, int]) -> str:
    """``frame`` as CSV text for a spreadsheet in ``lang``, float columns rounded as ``decimals`` says.

    French: ``;`` between fields and a decimal comma; English: ``,`` and a decimal point. Both
    start with a byte-order mark. The time column is named and written in Paris time.
    """
    rounded = frame.with_columns(
        pl.col(name).round(decimals.get(name, 2)) for name, dtype in frame.schema.items() if dtype.is_float()
    )
    if TIME in rounded.columns:
        rounded = rounded.with_columns(
            pl.col(TIME).dt.convert_time_zone(str(PARIS)).dt.strftime(_TIME_FORMAT[lang])
        ).rename({TIME: t(lang, "export.time")})
    text = rounded.write_csv(separator=";" if lang == "fr" else ",", decimal_comma=lang == "fr")
    return BOM + text
