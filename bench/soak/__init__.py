"""The soak benchmark: the whole platform on one machine, under a simulated fleet, measured.

    python -m bench.soak [--store influxdb|duckdb] [--minutes 60] [--devices 4000] [--families ...]
    python -m bench.soak --knee [--max-devices 160000] [--step-minutes 10] [--families ...]

See docs/performance.md ("Soak") for what each figure means and docs/sizing.md for what an
operator plans with. Modules: ``run`` (one soak, the knee's steps), ``platform`` (the servers
and ``smartcity`` processes), ``embedded`` (the one-process DuckDB platform), ``feed`` (the
fleet publishers), ``probes`` (timed readings and faults), ``procstat`` (CPU and RSS from
/proc), ``dashboard`` and ``dashboard_sessions`` (the staff sessions, adapter to
bench/dashboard_load.py), ``disk``, ``report``.
"""
