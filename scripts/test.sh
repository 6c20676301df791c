#!/usr/bin/env bash
# The test command: set up what is missing, build, then run the unit tests and the integration
# tests (real PostgreSQL and tansu, started by the tests themselves). Prints each stage's time.
# Every stage runs even after a failure; the exit status is 1 if any stage failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dqetl/target}
export DQETL_VENV=${DQETL_VENV:-/var/cache/dqetl/venv}
export PATH="$DQETL_VENV/bin:$HOME/.cargo/bin:$PATH"
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

timings=()
failed=()
stage() {
  local name=$1
  shift
  printf '\n==== %s: %s\n' "$name" "$*"
  local started=$SECONDS status=0
  "$@" || status=$?
  local took=$((SECONDS - started))
  timings+=("$(printf '%-18s %4dm%02ds  %s' "$name" $((took / 60)) $((took % 60)) "$([[ $status == 0 ]] && echo ok || echo "FAILED ($status)")")")
  if [[ $status != 0 ]]; then failed+=("$name"); fi
  return 0
}

stage setup bash scripts/setup.sh
if ((${#failed[@]} == 0)); then
  stage build cargo test --locked --no-run --lib --test it
fi
if ((${#failed[@]} == 0)); then
  stage "unit tests" cargo test --locked --no-fail-fast --lib
  stage "integration tests" cargo test --locked --no-fail-fast --test it
fi

printf '\n==== timings (target dir %s)\n' "$CARGO_TARGET_DIR"
printf '%s\n' "${timings[@]}"
if ((${#failed[@]} > 0)); then
  printf 'failed: %s\n' "${failed[*]}"
  exit 1
fi
echo "all stages passed"
