#!/usr/bin/env bash
# Re-measure the README's figures on a deployed lab (quiet machine, nothing else running):
#   benchmarks/readme_figures.sh [INVENTORY]        (default inventory/local: scripts/lab.sh up)
# Writes docs/figures/:
#   scaling-local-lab.{png,md,json}                 scale.yml -e darts=$SCALE_DARTS (default 6e10)
#   run-local-lab.{convergence,hosts}.png, .json    run_pi.yml -e darts=$RUN_DARTS (default 1e10) -e seed=1
#   overheads.{txt,json}                            benchmarks/overheads.py --inventory INVENTORY
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
inventory="${1:-inventory/local}"
out="$root/docs/figures"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export ANSIBLE_CONFIG="$root/ansible.cfg" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
if [[ -z "${VIRTUAL_ENV:-}" && -f "$root/.venv/bin/activate" ]]; then
  # shellcheck disable=SC1091
  source "$root/.venv/bin/activate"
fi
mkdir -p "$out"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

id="readme-$(date -u +%Y%m%dT%H%M%SZ)"
ansible-playbook scale.yml -i "$inventory" -e "darts=${SCALE_DARTS:-6e10}" -e seed=1 \
  -e "scale_id=$id" -e "pi_scale_results_dir=$tmp"
for ext in png md json; do cp "$tmp/scale-$id.$ext" "$out/scaling-local-lab.$ext"; done

ansible-playbook run_pi.yml -i "$inventory" -e "darts=${RUN_DARTS:-1e10}" -e seed=1 -e poll_interval=1 \
  -e "pi_run_results_dir=$tmp/run"
run_json="$(ls "$tmp"/run/*.json)"
stem="${run_json%.json}"
cp "$run_json" "$out/run-local-lab.json"
cp "$stem.convergence.png" "$out/run-local-lab.convergence.png"
cp "$stem.hosts.png" "$out/run-local-lab.hosts.png"

python "$root/benchmarks/overheads.py" --inventory "$inventory" --out "$out/overheads.json" | tee "$out/overheads.txt"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "figures in $out"
