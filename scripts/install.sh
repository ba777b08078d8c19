#!/usr/bin/env bash
# One install script for local set-up, CI and the Dockerfile.
#
#   scripts/install.sh            create/refresh .venv at the repo root (CPU torch)
#   VENV=/opt/venv TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 scripts/install.sh
#                                 (Dockerfile: GPU torch build matching the base image)
#
# Idempotent: a stamp file records the hash of the pins; re-running with unchanged pins is a no-op.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
EXTRA="${INSTALL_EXTRA-dev}"   # "dev" adds test/bench tools; the Dockerfile sets INSTALL_EXTRA=""

log() { printf '[install] %s\n' "$*" >&2; }

ensure_java() {
  # multi-model-server needs a Java runtime (17 works).
  if command -v java >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing a Java runtime for multi-model-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
  else
    log "WARNING: no java on PATH; multi-model-server (container tests, demo) needs Java 17"
  fi
}

stamp_of() {
  cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" "$ROOT/devstack/pyproject.toml" "$ROOT/scripts/install.sh" | sha256sum | cut -c1-16
  echo "$TORCH_VERSION $TORCH_INDEX_URL $EXTRA"
}

ensure_java
STAMP="$VENV/.install-stamp"
WANT="$(stamp_of)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
  log "environment up to date ($VENV)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >/dev/null

# torch first, pinned, so nothing later can pull an unpinned (multi-GB CUDA) build.
if [ -n "$TORCH_INDEX_URL" ]; then
  "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
else
  "${PIP[@]}" install "torch==$TORCH_VERSION"
fi

# Everything else in ONE command (setuptools<82 must be resolved together with sagemaker-inference),
# with torch held at the version just installed.
# The dev extra also installs devstack/ (the local AWS doubles: its own distribution, never in the image).
SPEC=(-e "$ROOT")
[ -n "$EXTRA" ] && SPEC=(-e "$ROOT[$EXTRA]" -e "$ROOT/devstack")
"${PIP[@]}" install "torch==$TORCH_VERSION" -r "$ROOT/requirements.txt" "${SPEC[@]}"
"${PIP[@]}" check >&2 || log "WARNING: pip check reported conflicts"
echo "$WANT" > "$STAMP"
log "ready: $VENV"
