#!/usr/bin/env bash
# Build the docker work pool's job image with no image registry (docs/work-pools.md, "A docker worker here"):
#   infra/docker/build-local-image.sh [TAG]          # default paperline:local
# 1. the base, once: Debian bookworm from Debian's mirror (debootstrap --variant=minbase, with python3 3.11, venv,
#    pip, git), imported as paperline-base:bookworm (PAPERLINE_BASE_IMAGE overrides; an existing one is reused);
# 2. the context: this checkout's files (git ls-files: tracked and untracked, not ignored), the CPU torch wheel pip
#    finds for constraints.txt's pin (pip download, the host's pip config: its find-links), and the host venv's
#    `pip freeze` as pins, so the image runs what the tests ran, and the host's CA bundle for pip's TLS;
# 3. docker build --network host (pip reaches PyPI; the engine may have no bridge network).
# Needs a Docker engine (DOCKER_HOST), debootstrap for the base, and root for debootstrap.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TAG="${1:-paperline:local}"
BASE="${PAPERLINE_BASE_IMAGE:-paperline-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PY="${PAPERLINE_PYTHON:-$ROOT/.venv/bin/python}"
export DOCKER_BUILDKIT=0   # the classic builder: BuildKit needs buildx, which Debian's docker.io lacks

work="$(mktemp -d "${TMPDIR:-/tmp}/paperline-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "building the base $BASE with debootstrap from $MIRROR"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,git,ca-certificates \
    bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  tar -C "$work/rootfs" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$work/rootfs"
fi

mkdir -p "$work/context/checkout" "$work/context/wheels"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
  | (cd "$ROOT" && xargs -0 -r tar -c --no-recursion -f - 2>/dev/null) | tar -C "$work/context/checkout" -x
torch_pin="$(grep -E '^torch==' "$ROOT/constraints.txt")"
"$PY" -m pip download --quiet --no-deps --only-binary :all: "$torch_pin" -d "$work/context/wheels"
"$PY" -m pip freeze --exclude-editable 2>/dev/null | grep -Ev '^(-e |#)|@ |^torch==' >"$work/context/pins.txt" || true
# pyproject's dependencies, for the image's dependency layer (cached while they and the pins stay the same)
"$PY" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
  "$ROOT/pyproject.toml" >"$work/context/requirements.txt"
cp "$ROOT/constraints.txt" "$work/context/constraints.txt"
cp "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$work/context/ca-bundle.crt"
cp "$ROOT/infra/docker/Dockerfile" "$work/context/Dockerfile"
docker build --network host --build-arg "BASE=$BASE" -t "$TAG" "$work/context"
