#!/usr/bin/env bash
# The README's side-by-side speed-up curves: scale.yml for pi (compute-bound), matmul at a few
# sizes (the arithmetic intensity grows with n) and matvec (bandwidth-bound), on a deployed lab:
#   benchmarks/workload_scaling.sh [INVENTORY]          (default inventory/local)
# Environment: PI_DARTS (default 1e11), MATMUL_SIZES (default "1024 2048 4096"), MATVEC_N (8192),
# MAX_WORKERS (default 0 = every instance), SEED (1).
# Writes docs/figures/:
#   scaling-<label>.{json,md,png}   one study each (pi, matmul-N, matvec-N)
#   scaling-workloads.png           every study's speed-up and efficiency side by side
#   workload-costs.md               bytes per job, moved per run, busy share, master writes
#   workload-scaling.txt            CPU, load averages and the commands
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
log="$out/workload-scaling.txt"
{
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
  echo "started $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$log"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
studies=()
study() {  # study LABEL scale.yml-arguments...
  local label="$1"
  shift
  local id="fig-$label-$stamp"
  echo "== $label: ansible-playbook scale.yml $* (load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$log"
  ansible-playbook scale.yml -i "$inventory" -e "seed=${SEED:-1}" -e "max_workers=${MAX_WORKERS:-0}" \
    -e "scale_id=$id" -e "pi_scale_results_dir=$tmp" "$@" >"$tmp/$label.log"
  for ext in json md png; do cp "$tmp/scale-$id.$ext" "$out/scaling-$label.$ext"; done
  cat "$tmp/scale-$id.md" | tee -a "$log"
  studies+=("$tmp/scale-$id")
}

study pi -e "darts=${PI_DARTS:-1e11}"
for n in ${MATMUL_SIZES:-1024 2048 4096}; do
  study "matmul-$n" -e workload=matmul -e "n=$n"
done
study "matvec-${MATVEC_N:-8192}" -e workload=matvec -e "n=${MATVEC_N:-8192}"

python -m pi_job.cli report --compare "${studies[@]/%/.json}" --out-dir "$tmp" --name scaling-workloads
cp "$tmp/scaling-workloads.png" "$out/scaling-workloads.png"
python "$root/benchmarks/workload_costs.py" "${studies[@]}" --out "$out/workload-costs.md" | tee -a "$log"
echo "finished $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
echo "figures in $out"
