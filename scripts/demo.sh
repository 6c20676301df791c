#!/usr/bin/env bash
# The whole pipeline on this machine, in one command: installs what is missing (scripts/setup.sh),
# builds dqetl, then runs `dqetl demo` (deploy the local stack, load it, generate change traffic,
# wait until the lake caught up, show the data-quality results).
#
# Idempotent: running it again resumes the same stack (deploy reports what already runs) and adds
# more traffic. Arguments go to `dqetl demo`, e.g. `scripts/demo.sh --duration 2m`.
#
# Environment:
#   CARGO_TARGET_DIR   build folder (default /var/cache/dqetl/target)
#   DQETL_PROFILE      release (default) or debug: which build to use
#   DQETL_STACK_NAME   stack name (default dqetl); state lives in .dqetl/<stack>/ here
#   DQETL_SKIP_SETUP   set to 1 to skip scripts/setup.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dqetl/target}
export PATH="$HOME/.cargo/bin:$PATH"
profile=${DQETL_PROFILE:-release}

step() { printf '\n==> %s\n' "$*"; }

if [[ ${DQETL_SKIP_SETUP:-0} != 1 ]]; then
  step "setup (scripts/setup.sh)"
  bash scripts/setup.sh
fi

case $profile in
  release)
    step "build (cargo build --release; the first release build takes long, DQETL_PROFILE=debug is faster)"
    cargo build --release --locked --bin dqetl
    ;;
  debug)
    step "build (cargo build)"
    cargo build --locked --bin dqetl
    ;;
  *)
    printf 'demo.sh: DQETL_PROFILE must be release or debug, found %s\n' "$profile" >&2
    exit 2
    ;;
esac
dqetl=$CARGO_TARGET_DIR/$profile/dqetl

step "dqetl demo $*"
exec "$dqetl" demo "$@"
