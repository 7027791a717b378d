#!/usr/bin/env bash
# Builds a Debian bookworm base image from Debian's own packages (debootstrap) and imports it
# into podman as localhost/smartcity-debian:bookworm, for machines that reach Debian's mirror
# but no container registry. Does nothing when the image is already there.
#   usage: docker/debian-base.sh [IMAGE]      (needs root, debootstrap and podman)
set -euo pipefail
IMAGE=${1:-localhost/smartcity-debian:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/podman/containers.conf}

if podman image exists "$IMAGE"; then
    exit 0
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "debian-base: debootstrap bookworm into $rootfs" >&2
debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/dev/null
# apt inside the image reaches the same mirror the root file system came from.
echo "deb $MIRROR bookworm main" > "$rootfs/etc/apt/sources.list"
tar -C "$rootfs" -c . | podman import --quiet - "$IMAGE" >/dev/null
echo "debian-base: imported $IMAGE" >&2
