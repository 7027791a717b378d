"""The deployment files: the compose stack validates and matches the settings it passes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from smartcity.settings import Settings


def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail(
        "neither `docker compose` nor `docker-compose` is installed: "
        "apt-get install docker-compose (./dev test does)",
        pytrace=False,
    )


def test_compose_file_validates(repo_root: Path) -> None:
    docker = repo_root / "docker"
    result = subprocess.run(
        [
            *_compose_command(),
            "--env-file",
            str(docker / ".env.example"),
            "-f",
            str(docker / "compose.yaml"),
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=docker,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("file", ["compose.yaml", "compose.test.yaml"])
def test_compose_passes_only_settings_the_platform_knows(repo_root: Path, file: str) -> None:
    """A typo in a SMARTCITY_* variable of the stack would be ignored silently: catch it here."""
    import yaml

    compose = yaml.safe_load((repo_root / "docker" / file).read_text())
    names = {
        name
        for service in compose["services"].values()
        for name in (service.get("environment") or {})
        if name.startswith("SMARTCITY_") and "__" in name
    }
    assert names, "the stack configures the platform through SMARTCITY_ variables"
    for name in sorted(names):
        path = name.removeprefix("SMARTCITY_").lower().split("__")
        model: type = Settings
        for part in path:
            fields = model.model_fields  # type: ignore[attr-defined]
            assert part in fields, f"{name}: no setting {part!r} in {model.__name__}"
            model = fields[part].annotation
