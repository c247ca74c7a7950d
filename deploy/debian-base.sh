#!/usr/bin/env bash
# A local stand-in for python:3.11-slim where no image registry is reachable: Debian bookworm (Python 3.11)
# debootstrapped from Debian's package mirror and committed as a buildah image. Needs root, debootstrap, buildah.
#
#   deploy/debian-base.sh [IMAGE]      (default localhost/llmforge-base:bookworm)
#
# The root filesystem is cached as a tarball under ${LLMFORGE_HOME:-~/.cache/llmforge}/container/, so a second run
# (or a wiped container storage) only imports it. Set STORAGE_DRIVER as for buildah (the tests use vfs).
set -euo pipefail

IMAGE=${1:-localhost/llmforge-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${LLMFORGE_HOME:-$HOME/.cache/llmforge}/container
TARBALL=$CACHE/debian-bookworm-python3.11.tar
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}

if buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE already built"; exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" "$MIRROR"
  # Slim like the python image: no apt lists, caches or docs.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
  tar -C "$root" -cf "$TARBALL.part" . && mv "$TARBALL.part" "$TARBALL"
fi
ctr=$(buildah from scratch)
buildah add "$ctr" "$TARBALL" /
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
  --cmd python3 "$ctr"
buildah commit --quiet --rm "$ctr" "$IMAGE" >/dev/null
echo "base image $IMAGE from $TARBALL"
