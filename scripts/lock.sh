#!/usr/bin/env bash
# Regenerate the hashed lock files from requirements.txt and pyproject.toml's dev extra:
#
#   make lock                  (= scripts/lock.sh; needs uv, which the dev extra installs)
#
#   requirements.lock          the runtime set (image, MAP, laptop without dev tools)
#   requirements-dev.lock      the runtime set plus the dev extra and devstack/'s dependencies, constrained to
#                              the runtime lock's versions
#   requirements-sagemaker2.lock
#                              the side venv .venv-sagemaker2 (the sagemaker SDK v2 alone, for tests/fidelity),
#                              from install.sh's SAGEMAKER2_PIN
#
# Both are resolved for CPython 3.11 on x86_64 glibc 2.35 (Ubuntu 22.04, the image's base), together with the
# torch pin of scripts/install.sh, and list every package with its sha256 hashes EXCEPT torch: install.sh
# installs torch first from the index that fits the machine (CPU wheel here, CUDA build in the image), then the
# lock with --require-hashes --no-deps, then `pip check`. tests/test_lock.py fails when requirements.txt, the
# dev extra or the torch pin disagree with the locks.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UV="${UV:-}"
if [ -z "$UV" ]; then
  VENV="${VENV:-$ROOT/.venv}"
  if [ -x "$VENV/bin/uv" ]; then UV="$VENV/bin/uv"; else UV=uv; fi
fi
TORCH_VERSION="$(sed -n 's/^TORCH_VERSION="\${TORCH_VERSION:-\([^}]*\)}"$/\1/p' scripts/install.sh)"
[ -n "$TORCH_VERSION" ] || { echo "lock: no TORCH_VERSION default found in scripts/install.sh" >&2; exit 1; }
SAGEMAKER2_PIN="$(sed -n 's/^SAGEMAKER2_PIN="\([^"]*\)".*$/\1/p' scripts/install.sh)"
[ -n "$SAGEMAKER2_PIN" ] || { echo "lock: no SAGEMAKER2_PIN found in scripts/install.sh" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
echo "torch==$TORCH_VERSION" > "$TMP/torch.txt"
COMMON=(--python-version 3.11 --python-platform x86_64-manylinux_2_35 --generate-hashes
        --no-emit-package torch --custom-compile-command "make lock" --quiet)
# The CPU torch wheel (if this machine keeps one in a find-links folder) resolves like the one on the index.
[ -n "${PIP_FIND_LINKS:-}" ] && COMMON+=(--find-links "$PIP_FIND_LINKS")

"$UV" pip compile requirements.txt "$TMP/torch.txt" "${COMMON[@]}" -o requirements.lock
# The dev set: the project with its dev extra and devstack/ (the local AWS doubles, a distribution of its own
# that depends on the project), both resolved from their pyproject files and not emitted (install.sh installs
# them editable, without dependencies).
printf -- '-e .[dev]\n-e ./devstack\n' > "$TMP/local.txt"
"$UV" pip compile requirements.txt "$TMP/local.txt" "$TMP/torch.txt" -c requirements.lock \
  --no-emit-package ahi-spleen-seg --no-emit-package ahi-spleen-devstack \
  "${COMMON[@]}" -o requirements-dev.lock
# The side venv (install.sh installs it with --require-hashes --no-deps into a fresh venv).
echo "$SAGEMAKER2_PIN" > "$TMP/sagemaker2.txt"
"$UV" pip compile "$TMP/sagemaker2.txt" --python-version 3.11 --python-platform x86_64-manylinux_2_35 \
  --generate-hashes --custom-compile-command "make lock" --quiet -o requirements-sagemaker2.lock
# Record the torch pin the lock was resolved with (tests/test_lock.py compares it with install.sh).
sed -i "2a # resolved with torch==$TORCH_VERSION (scripts/install.sh), which is not emitted: install.sh installs it first" \
  requirements.lock requirements-dev.lock
echo "lock: wrote requirements.lock, requirements-dev.lock (torch==$TORCH_VERSION resolved, not emitted) and requirements-sagemaker2.lock ($SAGEMAKER2_PIN)" >&2
