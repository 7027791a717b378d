"""Ahead-of-time compilation of the processing kernels (what the Docker image build runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_warmup_leaves_every_kernel_compiled_in_the_cache(tmp_path: Path) -> None:
    """A fresh cache directory ends up holding the machine code of the aggregate and anomaly
    kernels, so a service started on it compiles nothing."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "processing.warmup"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "air_quality, traffic, building, camera, network" in done.stdout
    compiled = {path.name.split(".")[0] for path in tmp_path.rglob("*.nbc")}
    assert {"window_kernels", "kernels"} <= compiled
    for kernel in (
        "minute_cells",
        "device_layout_slots",
        "copy_to_slots",
        "device_minute_partials",
        "minute_partials",
        "lay_out_by_commune",
        "window_order_stats",
    ):
        assert any(path.name.startswith(f"window_kernels.{kernel}-") for path in tmp_path.rglob("*.nbi")), (
            kernel
        )
