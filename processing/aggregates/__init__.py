"""Rolling aggregates of raw readings, by device and by commune (see ``compiled``)."""

from processing.aggregates.compiled import (
    LEVELS,
    aggregate,
    aggregate_all,
    fields_present,
    measurement_name,
    output_tags,
    spec_of,
    with_counter_increases,
)

__all__ = [
    "LEVELS",
    "aggregate",
    "aggregate_all",
    "fields_present",
    "measurement_name",
    "output_tags",
    "spec_of",
    "with_counter_increases",
]
