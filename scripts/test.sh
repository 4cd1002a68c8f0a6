#!/usr/bin/env bash
# Run every test of the project: static checks, the pi_job package against a real beanstalkd,
# ansible-lint, and the molecule scenarios on real systemd containers.
# It first runs scripts/bootstrap.sh, which installs and starts what the tests need.
# Select stages with STAGES="static unit lint molecule" (default: all of them).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export NO_COLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
stages="${STAGES:-static unit lint molecule}"
scenarios="${MOLECULE_SCENARIOS:-default source chaos scale ssh}"

"$root/scripts/bootstrap.sh"
# shellcheck disable=SC1091
source "$root/.venv/bin/activate"

declare -a summary=()
run_stage() {
  local name="$1"; shift
  local start=$SECONDS
  printf '\n===== %s =====\n' "$name"
  if "$@"; then
    summary+=("$(printf '%-22s passed  %4ds' "$name" $((SECONDS - start)))")
  else
    summary+=("$(printf '%-22s FAILED  %4ds' "$name" $((SECONDS - start)))")
    printf '\n%s\n' "${summary[@]}"
    exit 1
  fi
}

# molecule test, with the seconds since its start added to each stage's start and end lines.
molecule_test() {
  local scenario="$1" start=$SECONDS line
  molecule test -s "$scenario" 2>&1 | while IFS= read -r line; do
    case "$line" in
      *"] Executing"|*"] Executed: "*) printf '%s  [+%ds]\n' "$line" $((SECONDS - start)) ;;
      *) printf '%s\n' "$line" ;;
    esac
  done
}

static_checks() {
  ruff check pi_job benchmarks molecule roles examples && ruff format --check pi_job examples && mypy pi_job/src
}

if [[ " $stages " == *" static "* ]]; then run_stage "static (ruff, mypy)" static_checks; fi
if [[ " $stages " == *" lint "* ]]; then run_stage "ansible-lint" ansible-lint; fi
if [[ " $stages " == *" molecule "* ]]; then
  # A previous killed run may have left containers behind: remove those of the selected
  # scenarios only (mol-<scenario>-*), never another lab running on the same machine.
  for scenario in $scenarios; do
    stale="$(docker ps -aq --filter label=owner=molecule --filter "name=^mol-$scenario-")"
    [[ -z "$stale" ]] || docker rm -f $stale >/dev/null
  done
  # The ssh scenario's nodes: Debian 13 and Debian 12 with sshd (kept when current).
  if [[ " $scenarios " == *" ssh "* ]]; then
    "$root/scripts/build-image.sh" --ssh trixie
    "$root/scripts/build-image.sh" --ssh bookworm
  fi
  for scenario in $scenarios; do
    run_stage "molecule $scenario" molecule_test "$scenario"
  done
fi
if [[ " $stages " == *" unit "* ]]; then run_stage "pytest pi_job" pytest -q pi_job/tests; fi

printf '\n===== summary =====\n'
printf '%s\n' "${summary[@]}"
