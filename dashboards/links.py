"""Links between pages, built in one place so that every link escapes what it carries."""

from __future__ import annotations

from urllib.parse import quote


def device_href(insee: str, device_id: str) -> str:
    """The device page's URL, percent-encoded as UTF-8 (device ids hold spaces and accents)."""
    return f"/device/{quote(insee, safe='')}/{quote(device_id, safe='')}"
