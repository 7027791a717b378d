"""Open data out: the platform's public data as files in published schemas (docs/opendata.md)."""
