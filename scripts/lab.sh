#!/usr/bin/env bash
# The local docker lab in one command (run from anywhere, as root):
#   scripts/lab.sh up         bootstrap (if present) + containers + site.yml + run_pi.yml (DARTS=1e9)
#   scripts/lab.sh provision  site.yml again (e.g. after changing pi_job/ or a variable)
#   scripts/lab.sh run        run_pi.yml -e darts=${DARTS:-1e9} [extra ansible-playbook args]
#   scripts/lab.sh status     containers, services and the queue
#   scripts/lab.sh down       remove the containers and the network
# Extra arguments after the command go to ansible-playbook, e.g. `scripts/lab.sh run -e seed=1`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export ANSIBLE_CONFIG="$root/ansible.cfg"

activate() {
  if [[ -z "${VIRTUAL_ENV:-}" ]]; then
    [[ -f "$root/.venv/bin/activate" ]] || { echo "lab.sh: no .venv (run scripts/bootstrap.sh)" >&2; exit 1; }
    # shellcheck disable=SC1091
    source "$root/.venv/bin/activate"
  fi
}

timed() {
  local start=$SECONDS
  "$@"
  printf '[lab.sh] %s: %ds\n' "$*" $((SECONDS - start)) >&2
}

cmd="${1:-}"
shift || true
case "$cmd" in
  up)
    if [[ -x "$root/scripts/bootstrap.sh" ]]; then timed "$root/scripts/bootstrap.sh"; fi
    activate
    timed ansible-playbook playbooks/lab_up.yml
    timed ansible-playbook site.yml "$@"
    timed ansible-playbook run_pi.yml -e "darts=${DARTS:-1e9}" "$@"
    ;;
  provision)
    activate
    ansible-playbook site.yml "$@"
    ;;
  run)
    activate
    ansible-playbook run_pi.yml -e "darts=${DARTS:-1e9}" "$@"
    ;;
  status)
    docker ps --filter label=owner=pi-lab --format 'table {{.Names}}\t{{.Status}}'
    for node in pi-lab-server pi-lab-worker1 pi-lab-worker2; do
      docker inspect "$node" >/dev/null 2>&1 || continue
      printf '\n== %s\n' "$node"
      docker exec "$node" systemctl --no-pager list-units --all 'beanstalkd*' 'pi-worker*' 'pi-beanstalkd*' | grep -E '\.service' || true
    done
    if docker inspect pi-lab-server >/dev/null 2>&1; then
      printf '\n== queue\n'
      docker exec pi-lab-server bash -lc 'pi-job status --server "$PI_JOB_SERVER"' || true
    fi
    ;;
  down)
    activate
    ansible-playbook playbooks/lab_down.yml "$@"
    ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
