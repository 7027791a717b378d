"""The compose stack of docker/, built and run for real with podman, for tests.

There is no Docker engine where the tests run, and no container registry: the base image is made
from Debian's own packages (docker/debian-base.sh) and podman runs the containers with the
project's containers.conf. podman-compose does not wait on `depends_on` conditions, and podman
runs health checks from systemd timers that a machine without systemd does not have, so
:meth:`Stack.up` starts the services in the order the compose file declares and waits on each
condition itself, running the declared health checks with `podman healthcheck run`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.servers import REPO, wait_until

DOCKER = REPO / "docker"
CONTAINERS_CONF = DOCKER / "podman" / "containers.conf"
BASE_IMAGE = "localhost/smartcity-debian:bookworm"
PLATFORM_IMAGE = "localhost/smartcity:test"
TEST_IMAGES = {
    "localhost/smartcity-test-mosquitto:latest": DOCKER / "test" / "mosquitto.Dockerfile",
    "localhost/smartcity-test-influxdb:latest": DOCKER / "test" / "influxdb.Dockerfile",
}
# What the stack test needs on the host, by Debian package.
TOOLS = {
    "podman": "podman",
    "podman-compose": "podman-compose",
    "debootstrap": "debootstrap",
    "runc": "runc",
}
DNSNAME_PLUGIN = Path("/usr/lib/cni/dnsname")
HOST_CA_BUNDLE = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
# The strongest condition wins: a service that one dependant needs healthy and another needs
# finished is waited on until it has finished.
_CONDITION_RANK = {"service_started": 0, "service_healthy": 1, "service_completed_successfully": 2}


class StackError(RuntimeError):
    """The stack could not be built or started; the message says what failed and its output."""


def missing_tools() -> list[str]:
    """Debian packages the stack test needs that are not installed."""
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not DNSNAME_PLUGIN.exists():
        missing.append("golang-github-containernetworking-plugin-dnsname")
    return missing


def podman_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every podman call: the project's containers.conf, plus ``extra``."""
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    env.update(extra or {})
    return env


def run(
    command: list[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    stdin: str | None = None,
) -> str:
    """Run a command; raise :class:`StackError` with its output when it fails."""
    result = subprocess.run(
        command,
        input=stdin,
        env=dict(env) if env is not None else podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def build_images() -> None:
    """The Debian base (once per machine), the platform image and the two test stand-ins.

    podman's layer cache keeps every step between runs on the same machine, so a second run only
    rebuilds what changed.
    """
    run([str(DOCKER / "debian-base.sh"), BASE_IMAGE], timeout=1200)
    build = ["podman", "build", "--network=host", "--quiet", "--build-arg", f"BASE={BASE_IMAGE}"]
    platform = [*build, "-f", str(DOCKER / "Dockerfile"), "-t", PLATFORM_IMAGE]
    if HOST_CA_BUNDLE.exists():
        # pip inside the build goes through the same TLS-inspecting egress as the host's.
        platform += ["-v", f"{HOST_CA_BUNDLE}:/run/build-ca.crt:ro"]
        platform += ["--build-arg", "BUILD_CA_BUNDLE=/run/build-ca.crt"]
    run([*platform, str(REPO)], timeout=1800)
    for image, dockerfile in TEST_IMAGES.items():
        run([*build, "-f", str(dockerfile), "-t", image, str(dockerfile.parent)], timeout=900)


@dataclass
class Stack:
    """One compose project of docker/compose.yaml with the test override."""

    project: str
    env: dict[str, str]
    files: tuple[Path, ...] = (DOCKER / "compose.yaml", DOCKER / "compose.test.yaml")
    _services: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]

    def compose(self, *args: str, timeout: float = 600, stdin: str | None = None) -> str:
        """Run ``podman-compose`` on this project."""
        command = ["podman-compose", "--no-ansi", "-p", self.project]
        for file in self.files:
            command += ["-f", str(file)]
        return run([*command, *args], env=podman_env(self.env), timeout=timeout, stdin=stdin)

    def container(self, service: str) -> str:
        """The name podman-compose gives the (single) container of ``service``."""
        return f"{self.project}_{service}_1"

    def podman(self, *args: str, timeout: float = 120) -> str:
        """Run ``podman`` with the project's configuration."""
        return run(["podman", *args], env=podman_env(self.env), timeout=timeout)

    def exec(self, service: str, *command: str) -> str:
        """Run a command in the running container of ``service``."""
        return self.podman("exec", self.container(service), *command, timeout=300)

    def order(self) -> list[tuple[str, str]]:
        """Every service in an order that starts each after its dependencies, with the condition
        that its dependants wait on (``service_started`` when none asks more)."""
        wanted: dict[str, str] = {name: "service_started" for name in self._services}
        for spec in self._services.values():
            for dep, how in _depends_on(spec).items():
                if _CONDITION_RANK[how] > _CONDITION_RANK[wanted[dep]]:
                    wanted[dep] = how
        ordered: list[str] = []
        while len(ordered) < len(self._services):
            ready = [
                name
                for name, spec in self._services.items()
                if name not in ordered and all(dep in ordered for dep in _depends_on(spec))
            ]
            if not ready:
                raise StackError("docker/compose.yaml: depends_on has a cycle")
            ordered += ready
        return [(name, wanted[name]) for name in ordered]

    def up(self, *, before: Mapping[str, Callable[[], object]] | None = None, timeout: float = 300) -> None:
        """Start every service, each once its dependencies meet their declared conditions;
        ``before[service]`` runs first where given (what an operator does before starting it)."""
        for service, condition in self.order():
            if before and service in before:
                before[service]()
            self.compose("up", "-d", "--no-deps", service)
            if condition == "service_completed_successfully":
                self.wait_exited(service, timeout=timeout)
            elif condition == "service_healthy" or self.has_healthcheck(service):
                self.wait_healthy(service, timeout=timeout)

    def has_healthcheck(self, service: str) -> bool:
        """Whether the compose file declares a health check for ``service``."""
        return "healthcheck" in self._services[service]

    def wait_exited(self, service: str, *, timeout: float) -> None:
        """Wait for a one-shot service to finish; fail with its logs unless it exited 0."""
        code = self.podman("wait", self.container(service), timeout=timeout).strip()
        if code != "0":
            raise StackError(f"{service} exited {code}:\n{self.logs(service)}")

    def wait_healthy(self, service: str, *, timeout: float) -> None:
        """Run the service's health check until it passes (podman has no timer to run it here)."""
        name = self.container(service)

        def healthy() -> bool:
            state = self.podman("inspect", "--format", "{{.State.Status}}", name).strip()
            if state not in {"running", "created", "configured"}:
                raise StackError(f"{service} is {state}:\n{self.logs(service)}")
            check = subprocess.run(
                ["podman", "healthcheck", "run", name],
                env=podman_env(self.env),
                capture_output=True,
                check=False,
            )
            return check.returncode == 0

        try:
            wait_until(healthy, timeout=timeout, interval=1.0, what=f"{service} to pass its health check")
        except TimeoutError as exc:
            raise StackError(f"{exc}:\n{self.logs(service)}") from exc

    def logs(self, service: str) -> str:
        """The last lines a service's container wrote."""
        result = subprocess.run(
            ["podman", "logs", "--tail", "60", self.container(service)],
            env=podman_env(self.env),
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout + result.stderr

    def down(self) -> None:
        """Stop the stack and remove its containers, network and volumes."""
        subprocess.run(
            ["podman-compose", "--no-ansi", "-p", self.project]
            + [arg for file in self.files for arg in ("-f", str(file))]
            + ["down", "-v", "-t", "5"],
            env=podman_env(self.env),
            capture_output=True,
            timeout=300,
            check=False,
        )
        # podman-compose 1.0.3 leaves the project's network, and in some versions its named
        # volumes, behind on `down -v`.
        label = f"label=io.podman.compose.project={self.project}"
        for volume in self.podman("volume", "ls", "--quiet", "--filter", label).split():
            self.podman("volume", "rm", "-f", volume)
        for network in self.podman("network", "ls", "--quiet", "--filter", label).split():
            self.podman("network", "rm", "-f", network)


def _depends_on(spec: Mapping[str, Any]) -> dict[str, str]:
    deps = spec.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (how or {}).get("condition", "service_started") for name, how in deps.items()}
