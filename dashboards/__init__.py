"""Dash multi-page dashboards per commune, and the query API for notebooks."""
