#!/usr/bin/env bash
# Installs what dqetl's local target and its tests need, on Debian 12, as root:
# system packages, the tansu broker (built once with cargo, cached) and a Python venv with the
# independent checkers (moto server, cfn-lint, deltalake, pyarrow).
# Idempotent: each step says what it did or that it was already there. Needs no terminal.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

CACHE_DIR=/var/cache/dqetl
VENV=${DQETL_VENV:-$CACHE_DIR/venv}
TANSU_VERSION=0.6.0
TANSU_TARGET_DIR=${DQETL_TANSU_TARGET_DIR:-$CACHE_DIR/tansu-target}
APT_PACKAGES=(
  postgresql postgresql-contrib
  build-essential pkg-config libssl-dev zlib1g-dev libsasl2-dev
  python3-venv curl ca-certificates docker-registry strace
)
# botocore is pinned: moto serves each AWS service with botocore's model of it, and botocore
# 1.44.18 moved Athena from the JSON protocol the AWS SDK for Rust speaks to REST-JSON.
PYTHON_PACKAGES=("moto[server]" cfn-lint deltalake pyarrow "boto3==1.44.13" "botocore==1.44.13")

export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '==> %s: %s\n' "$1" "$2"; }
fail() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE_DIR"

# --- system packages ---------------------------------------------------------------------------
missing=()
for package in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
  step "system packages" "already installed (${APT_PACKAGES[*]})"
else
  [[ $(id -u) == 0 ]] || fail "missing system packages (${missing[*]}); run this script as root"
  step "system packages" "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  step "system packages" "installed ${missing[*]}"
fi

# --- PostgreSQL server programs ----------------------------------------------------------------
pg_bin=""
if command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then
  pg_bin=$(pg_config --bindir)
else
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
    if [[ -x $dir/initdb ]]; then pg_bin=$dir; break; fi
  done
fi
[[ -n $pg_bin ]] || fail "PostgreSQL server programs (initdb, pg_ctl) not found after installing postgresql"
step "postgresql" "server programs in $pg_bin ($("$pg_bin/postgres" --version))"
id postgres >/dev/null 2>&1 || fail "the postgres system user is missing (it comes with the postgresql package)"

# --- Rust toolchain ----------------------------------------------------------------------------
command -v cargo >/dev/null \
  || fail "cargo not found; install Rust 1.95 or newer (https://rustup.rs) and run this script again"
step "cargo" "found $(cargo --version)"

# --- tansu broker ------------------------------------------------------------------------------
installed_tansu=$(tansu --version 2>/dev/null || true)
if [[ $installed_tansu == *" $TANSU_VERSION"* ]]; then
  step "tansu" "already installed ($installed_tansu at $(command -v tansu))"
else
  step "tansu" "building $TANSU_VERSION (first time: about 20-30 minutes; cached in $TANSU_TARGET_DIR)"
  CARGO_TARGET_DIR=$TANSU_TARGET_DIR \
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
  step "tansu" "installed $(tansu --version)"
fi

# --- Python tools ------------------------------------------------------------------------------
if [[ -x $VENV/bin/python ]]; then
  step "python venv" "already at $VENV"
else
  python3 -m venv "$VENV"
  step "python venv" "created $VENV"
fi
py=$VENV/bin/python
missing=()
for requirement in "${PYTHON_PACKAGES[@]}"; do
  name=${requirement%%[[=]*}
  "$py" -m pip show --quiet "$name" >/dev/null 2>&1 || { missing+=("$requirement"); continue; }
  if [[ $requirement == *==* ]] \
    && [[ $("$py" -c "import importlib.metadata as m; print(m.version('$name'))") != "${requirement#*==}" ]]; then
    missing+=("$requirement")
    continue
  fi
  # The server extra of moto brings flask; a plain moto install lacks it.
  if [[ $requirement == "moto[server]" ]] && ! "$py" -c 'import flask, flask_cors' >/dev/null 2>&1; then
    missing+=("$requirement")
  fi
done
if ((${#missing[@]} == 0)); then
  step "python packages" "already installed (${PYTHON_PACKAGES[*]})"
else
  step "python packages" "installing ${missing[*]}"
  "$py" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
  step "python packages" "installed ${missing[*]}"
fi

step "done" "services run from $pg_bin and $(command -v tansu); Python tools in $VENV/bin"
