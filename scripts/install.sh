#!/usr/bin/env bash
# One install script for local set-up, CI and the Dockerfile.
#
#   scripts/install.sh            create/refresh .venv at the repo root (CPU torch)
#   VENV=/opt/venv TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 scripts/install.sh
#                                 (Dockerfile: GPU torch build matching the base image)
#
#   SAGEMAKER2_ONLY=1 scripts/install.sh
#                                 only the side venv .venv-sagemaker2 (see below; tests/fidelity runs this)
#
# Versions come from the hashed lock files (requirements.lock, or requirements-dev.lock with the dev extra; made
# by `make lock` = scripts/lock.sh from requirements.txt and pyproject.toml), so a laptop, CI and the image get
# the same packages. torch is not in the locks: it is installed first, pinned, from the index that fits.
# Idempotent: a stamp file records the hash of the pins; re-running with unchanged pins is a no-op.
#
# The dev extra carries the `sagemaker` Python SDK v3 (what `pip install sagemaker` gives today). v2
# (`sagemaker<3`, with sagemaker.predictor / sagemaker.pytorch) cannot share a venv with v3, so the dev
# install also builds a small side venv, .venv-sagemaker2 (SAGEMAKER2_VENV), holding only SDK v2, in which
# tests/fidelity drives sagemaker-local with the v2 Predictor/AsyncPredictor. Neither is a product dependency.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
EXTRA="${INSTALL_EXTRA-dev}"   # "dev" adds test/bench tools; the Dockerfile sets INSTALL_EXTRA=""

log() { printf '[install] %s\n' "$*" >&2; }

SAGEMAKER2_VENV="${SAGEMAKER2_VENV:-$ROOT/.venv-sagemaker2}"
SAGEMAKER2_PIN="sagemaker==2.257.7"   # requirements-sagemaker2.lock is resolved from this pin (make lock)
SAGEMAKER2_LOCK="requirements-sagemaker2.lock"

ensure_sagemaker2_venv() {
  # As locked, like the main venv: every file hash-checked, no resolution, then pip check.
  local stamp="$SAGEMAKER2_VENV/.install-stamp" want
  want="$(sha256sum "$ROOT/$SAGEMAKER2_LOCK" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$SAGEMAKER2_VENV/bin/python" ]; then
    log "sagemaker v2 venv up to date ($SAGEMAKER2_VENV)"
    return 0
  fi
  log "creating $SAGEMAKER2_VENV from $SAGEMAKER2_LOCK ($SAGEMAKER2_PIN, the sagemaker SDK v2, for tests/fidelity)"
  [ -x "$SAGEMAKER2_VENV/bin/python" ] || "$PYTHON" -m venv "$SAGEMAKER2_VENV"
  local pip=("$SAGEMAKER2_VENV/bin/python" -m pip --disable-pip-version-check -q)
  "${pip[@]}" install --require-hashes --no-deps -r "$ROOT/$SAGEMAKER2_LOCK"
  if ! "${pip[@]}" check >&2; then
    log "pip check failed in $SAGEMAKER2_VENV: regenerate $SAGEMAKER2_LOCK with 'make lock'"
    exit 1
  fi
  echo "$want" > "$stamp"
}

if [ "${SAGEMAKER2_ONLY:-}" = "1" ]; then
  ensure_sagemaker2_venv
  exit 0
fi

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

ensure_dicom3tools() {
  # dciodvfy (Debian package dicom3tools) checks every SEG the product writes (tests/conformance); dev only.
  if [ -z "$EXTRA" ] || command -v dciodvfy >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing dicom3tools (dciodvfy) for the DICOM SEG conformance tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dicom3tools >/dev/null
  else
    log "WARNING: no dciodvfy on PATH; the SEG conformance tests skip (apt-get install dicom3tools as root)"
  fi
}

ensure_orthanc() {
  # Orthanc + its DICOMweb plugin: the reference implementation the DICOMweb conformance tests
  # (tests/dicomweb/) compare ahi-local against. Dev only; the tests start their own instance.
  [ -n "$EXTRA" ] || return 0
  if command -v Orthanc >/dev/null 2>&1 && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Orthanc and its DICOMweb plugin (reference for tests/dicomweb)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb >/dev/null
    # The package starts a system service on 4242/8042; the tests run their own instance on a free port.
    if command -v service >/dev/null 2>&1; then service orthanc stop >/dev/null 2>&1 || true; fi
  else
    log "WARNING: no Orthanc; tests/dicomweb skip their conformance part (install as root: apt-get install orthanc orthanc-dicomweb)"
  fi
}

stamp_of() {
  # devstack/ is not in the image's build context (.dockerignore): only the dev install reads it.
  local files=("$ROOT/requirements.txt" "$ROOT/$LOCK" "$ROOT/pyproject.toml" "$ROOT/scripts/install.sh")
  [ -n "$EXTRA" ] && files+=("$ROOT/devstack/pyproject.toml")
  cat "${files[@]}" | sha256sum | cut -c1-16
  echo "$TORCH_VERSION $TORCH_INDEX_URL $EXTRA"
}

case "$EXTRA" in
  "") LOCK=requirements.lock ;;
  dev) LOCK=requirements-dev.lock ;;
  *) log "INSTALL_EXTRA must be 'dev' or empty (there is one lock file for each), not '$EXTRA'"; exit 2 ;;
esac

ensure_java
ensure_dicom3tools
ensure_orthanc
STAMP="$VENV/.install-stamp"
WANT="$(stamp_of)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
  [ -n "$EXTRA" ] && ensure_sagemaker2_venv
  log "environment up to date ($VENV)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# torch first, pinned, so nothing later can pull an unpinned (multi-GB CUDA) build.
if [ -n "$TORCH_INDEX_URL" ]; then
  "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
else
  "${PIP[@]}" install "torch==$TORCH_VERSION"
fi

# Everything else exactly as locked: every file checked against its sha256, no dependency resolution (the lock is
# the resolution; it holds pip and setuptools too), then the project itself without dependencies; the dev extra
# also installs devstack/ (the local AWS doubles: its own distribution, never in the image).
log "installing $LOCK"
"${PIP[@]}" install --require-hashes --no-deps -r "$ROOT/$LOCK"
SPEC=(-e "$ROOT")
[ -n "$EXTRA" ] && SPEC+=(-e "$ROOT/devstack")
"${PIP[@]}" install --no-deps --no-build-isolation "${SPEC[@]}"
if ! "${PIP[@]}" check >&2; then
  log "pip check failed: $LOCK and torch==$TORCH_VERSION do not fit together; regenerate with 'make lock'"
  exit 1
fi
[ -n "$EXTRA" ] && ensure_sagemaker2_venv
echo "$WANT" > "$STAMP"
log "ready: $VENV"
