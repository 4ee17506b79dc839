#!/usr/bin/env bash
# Test-only venv with the real SAELens and sparsify (pinned in tests/interop/requirements.txt)
# for tests/test_sae_interop.py, which runs them in subprocesses. They never enter .venv: their
# dependencies (transformers, datasets, transformer-lens ...) would move the project's.
#   scripts/ensure_interop.sh [VENV]      default VENV: .venv-interop
# Cached: reinstalled only when the requirements file changes (stamp file inside the venv).
# Without network the install fails with a warning and the interop tests skip locally;
# CI sets REPSCOPE_REQUIRE_INTEROP=1 so a missing venv fails the run instead.
set -u
cd "$(dirname "$0")/.."
VENV=${1:-.venv-interop}
PY=${PY:-python3}
REQ=tests/interop/requirements.txt
STAMP=$VENV/.interop-installed
if [ -f "$STAMP" ] && cmp -s "$REQ" "$STAMP"; then exit 0; fi
echo "Setting up $VENV (SAELens, sparsify; test-only) ..."
start=$(date +%s)
rm -rf "$VENV"
quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }  # pip's notes on absent local indexes
if "$PY" -m venv "$VENV" \
   && quiet "$VENV/bin/python" -m pip install -q torch==2.13.0 \
   && quiet "$VENV/bin/python" -m pip install -q -r "$REQ" torch==2.13.0; then
  cp "$REQ" "$STAMP"
  echo "$VENV ready in $(( $(date +%s) - start )) s"
else
  rm -rf "$VENV"
  echo "warning: could not install the interop venv; tests/test_sae_interop.py will be skipped"
fi
exit 0
