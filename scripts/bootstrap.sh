#!/usr/bin/env bash
# Install and start everything the lab and the tests need on a Debian or Ubuntu controller, as root:
# system packages, a running docker engine, the pinned tool venv (.venv) with pi_job installed
# editable, and the local systemd base image. Safe to run again: each step is skipped when done.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${PI_VENV:-$root/.venv}"
log() { printf '[bootstrap] %s\n' "$*"; }

[[ $EUID -eq 0 ]] || { echo "bootstrap: run as root (it installs packages and starts dockerd)" >&2; exit 2; }

# 1. System packages: docker engine, debootstrap (base image), beanstalkd (binary for the
#    package's tests), venv support.
need=()
for cmd_pkg in dockerd:docker.io debootstrap:debootstrap beanstalkd:beanstalkd; do
  command -v "${cmd_pkg%%:*}" >/dev/null 2>&1 || need+=("${cmd_pkg#*:}")
done
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# 2. A running docker engine. Use systemd when it runs the host, else start dockerd ourselves.
if ! docker info >/dev/null 2>&1; then
  if [[ -d /run/systemd/system ]]; then
    log "systemctl start docker"
    systemctl start docker
  else
    log "starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "bootstrap: dockerd did not start, see /var/log/dockerd.log" >&2; exit 1; }
fi

# 3. The pinned tool venv, rebuilt when requirements-dev.txt changes.
stamp="$venv/.requirements.sha256"
want="$(sha256sum requirements-dev.txt pi_job/pyproject.toml examples/primes/pyproject.toml | sha256sum | cut -c1-64)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "venv $venv (pinned tools, pi_job editable)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: Python >= 3.11 is required, found $(python3 --version)" >&2; exit 1; }
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r requirements-dev.txt
  "$venv/bin/pip" install -q -e "./pi_job[test]"
  "$venv/bin/pip" install -q -e ./examples/primes  # the example workload (docs/WORKLOADS.md)
  echo "$want" >"$stamp"
fi

# 4. The lab's base image, built locally (no registry).
"$root/scripts/build-image.sh"
log "ready"
