"""Polars jobs: rolling aggregates, domain indices and anomalies, and the runner that schedules them."""
