"""End-to-end overheads of pi_job, printed as figures.

Local part (always; needs beanstalkd on PATH or $BEANSTALKD and pi_job importable):

* per-job overhead: many tiny jobs (default 2000 jobs of 1 dart) through a private loopback
  beanstalkd (binlog on, like the lab) with 1 and with 2 real ``pi-job worker`` processes,
  ``(master wall - pure compute) / jobs``. Goal <= 1 ms.
* master start-up: wall time of the ``pi-job run`` process for a trivial run (1 dart, 1 job)
  minus the run's own ``seconds`` (interpreter, imports, journal, connect, exit), and the bare
  ``pi-job --version`` process for comparison.

Lab part (``--inventory DIR``; skipped with a message when the lab does not answer):

* fixed cost of ``ansible-playbook run_pi.yml -e darts=1e9``: its wall time minus the master's
  ``seconds`` (with the default poll interval, and with ``poll_interval=1``).
* parallel efficiency of a run of >= 10 s: darts/s of the run against (cores x single-core kernel
  rate), cores = the distinct CPUs behind the worker hosts (hosts sharing a kernel, e.g. the docker
  lab's containers, count once), the kernel rate from ``pi-job bench --json`` on a worker host.
  Goal >= 90 %.

Usage:
  python benchmarks/overheads.py [--jobs 2000] [--inventory inventory/local] [--json] [--out FILE]
  python benchmarks/overheads.py --skip-local --inventory inventory/local
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "pi_job" / "benchmarks"))
from loopback import ENV, LoopbackCluster, cli

PER_JOB_GOAL_S = 1e-3
EFFICIENCY_GOAL = 0.90


def kernel_rate_local(seconds: float = 2.0) -> float:
    """Best single-core darts/s of this machine's kernels (pi-job bench --json)."""
    out = subprocess.run(
        cli("bench", "--json", "--seconds", str(seconds)),
        capture_output=True,
        text=True,
        check=True,
        env=ENV,
    ).stdout
    return max(float(v) for v in json.loads(out).values())


def fsync_seconds(directory: str, count: int = 300) -> float:
    """Mean time of write + fsync of one short line (the master journals every result so)."""
    with tempfile.NamedTemporaryFile("w", dir=directory) as handle:
        start = time.perf_counter()
        for _ in range(count):
            handle.write("x" * 120 + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return (time.perf_counter() - start) / count


def measure_local(jobs: int, rate: float) -> dict[str, Any]:
    """Per-job overhead with 1 and 2 workers, and the master's start-up."""
    figures: dict[str, Any] = {"cpus": os.cpu_count(), "kernel_rate": rate, "per_job": {}}
    with tempfile.TemporaryDirectory(prefix="pi-overheads-") as tmp:
        figures["fsync_s"] = fsync_seconds(tmp)
        cluster = LoopbackCluster(Path(tmp))
        try:
            for workers in (1, 2):
                cluster.set_workers(workers)
                result, wall = cluster.run(jobs, f"overhead-jobs-w{workers}", job_darts=1)
                compute = result["darts"] / rate / workers
                figures["per_job"][str(workers)] = {
                    "jobs": result["jobs"],
                    "seconds": result["seconds"],
                    "process_wall": wall,
                    "per_job_s": (result["seconds"] - compute) / result["jobs"],
                    "jobs_per_s": result["jobs"] / result["seconds"],
                }
            cluster.set_workers(1)
            startups = []
            for index in range(3):
                result, wall = cluster.run(1, f"overhead-start-{index}", job_darts=1)
                startups.append((wall, result["seconds"]))
        finally:
            cluster.close()
    best_wall, best_seconds = min(startups)
    figures["master_startup"] = {
        "process_wall": best_wall,
        "run_seconds": best_seconds,
        "startup_s": best_wall - best_seconds,
    }
    start = time.perf_counter()
    subprocess.run(cli("--version"), capture_output=True, check=True, env=ENV)
    figures["master_startup"]["bare_cli_s"] = time.perf_counter() - start
    return figures


# -- the lab ------------------------------------------------------------------------------------
def ansible_env() -> dict[str, str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env.pop("ANSIBLE_ROLES_PATH", None)
    return env


def ansible_bin(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def adhoc(inventory: str, pattern: str, command: str, timeout: int = 120) -> dict[str, str]:
    """Run a command on hosts with `ansible -m command`; return host -> stdout (one-line format)."""
    proc = subprocess.run(
        [ansible_bin("ansible"), pattern, "-i", inventory, "-b", "-o", "-m", "ansible.builtin.command", "-a", command],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ansible {pattern} -a {command!r}: {(proc.stdout + proc.stderr).strip()[-500:]}")
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        host, sep, rest = line.partition(" | ")
        if sep and "(stdout)" in rest:
            out[host.strip()] = rest.split("(stdout)", 1)[1].strip().replace("\\n", "\n")
    return out


def lab_answers(inventory: str) -> str:
    """'' when every host of the inventory answers a ping, else the reason."""
    proc = subprocess.run(
        [ansible_bin("ansible"), "beanstalkd:workers:master", "-i", inventory, "-o", "-m", "ansible.builtin.ping"],
        cwd=REPO, env=ansible_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    if proc.returncode != 0:
        last = (proc.stdout + proc.stderr).strip().splitlines()
        return last[-1] if last else f"ansible exit {proc.returncode}"
    return ""


def run_pi(inventory: str, darts: int, *extra: str) -> tuple[dict[str, Any], float]:
    """ansible-playbook run_pi.yml; return (fetched result, playbook wall time)."""
    with tempfile.TemporaryDirectory(prefix="pi-overheads-lab-") as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            [ansible_bin("ansible-playbook"), str(REPO / "run_pi.yml"), "-i", inventory, "-e", f"darts={darts}",
             "-e", f"pi_run_results_dir={tmp}", "-e", "pi_run_report=false", *extra],
            cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"run_pi.yml failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        [path] = list(Path(tmp).glob("*.json"))
        return json.loads(path.read_text()), wall


def round_robin(instances: dict[str, str], count: int) -> dict[str, list[str]]:
    """The first ``count`` instances taken round-robin across hosts: host -> unit names."""
    queues = {host: sorted(units.split(), key=lambda u: int(u.split("@")[1].split(".")[0])) for host, units in instances.items()}
    keep: dict[str, list[str]] = {host: [] for host in queues}
    hosts = sorted(queues)
    while count > 0 and any(queues.values()):
        for host in hosts:
            if count > 0 and queues[host]:
                keep[host].append(queues[host].pop(0))
                count -= 1
    return keep


def efficiency_run(inventory: str, darts: int, min_seconds: float, ideal: float) -> dict[str, Any]:
    """A run of at least ``min_seconds``; its darts/s against ``ideal``."""
    for _ in range(3):
        result, _wall = run_pi(inventory, darts)  # default polling: rare once the run is long
        if result["seconds"] >= min_seconds:
            break
        darts = int(float(f"{darts * min_seconds * 1.3 / result['seconds']:.2g}"))
    return {
        "darts": result["darts"],
        "jobs": result["jobs"],
        "workers": result["workers"],
        "seconds": result["seconds"],
        "darts_per_second": result["darts_per_second"],
        "ideal_darts_per_second": ideal,
        "efficiency": result["darts_per_second"] / ideal,
    }


def measure_lab(inventory: str, min_seconds: float) -> dict[str, Any]:
    figures: dict[str, Any] = {"inventory": inventory}
    nproc = adhoc(inventory, "workers", "nproc")
    boot = adhoc(inventory, "workers", "cat /proc/sys/kernel/random/boot_id")
    machines = {boot[h]: int(nproc[h]) for h in nproc}
    cores = sum(machines.values())
    instances = adhoc(inventory, "workers", "ls /etc/systemd/system/pi-worker.service.wants/")
    total_instances = sum(len(v.split()) for v in instances.values())
    first = min(nproc)
    bench = json.loads(adhoc(inventory, first, "/opt/pi-job/venv/bin/pi-job bench --json --seconds 3")[first])
    rate = max(float(v) for v in bench.values())
    figures.update(cores=cores, machines=len(machines), worker_instances=total_instances, kernel_rate=rate)

    fixed = {}
    for label, extra in (("default_poll", ()), ("poll_interval_1", ("-e", "poll_interval=1"))):
        result, wall = run_pi(inventory, 10**9, *extra)
        fixed[label] = {"playbook_wall": wall, "run_seconds": result["seconds"], "fixed_cost_s": wall - result["seconds"]}
    figures["run_pi_fixed_cost_1e9"] = fixed

    usable = min(cores, total_instances)
    darts = int(float(f"{rate * usable * min_seconds * 1.2:.2g}"))
    # One worker per core: stop the surplus instances (round-robin across hosts, as scale.yml
    # does) for the efficiency run, and measure the oversubscribed cluster too, for comparison.
    keep = round_robin(instances, usable)
    surplus = {host: [u for u in units.split() if u not in keep.get(host, [])] for host, units in instances.items()}
    try:
        for host, units in surplus.items():
            if units:
                adhoc(inventory, host, "systemctl stop " + " ".join(units))
        figures["efficiency_run"] = efficiency_run(inventory, darts, min_seconds, usable * rate)
    finally:
        for host, units in instances.items():
            adhoc(inventory, host, "systemctl start pi-worker.service " + units.replace("\n", " "))
    if total_instances > usable:
        figures["oversubscribed_run"] = efficiency_run(inventory, darts, min_seconds, usable * rate)
    return figures


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def print_figures(fig: dict[str, Any]) -> None:
    print(f"machine: {fig['cpus']} CPUs, load average {fig['load_before']} before, {fig['load_after']} after")
    local = fig.get("local")
    if local:
        print(f"single-core kernel rate (pi-job bench, best backend): {local['kernel_rate']:.3g} darts/s")
        for workers, part in local["per_job"].items():
            ok = "ok" if part["per_job_s"] <= PER_JOB_GOAL_S else "ABOVE GOAL"
            print(
                f"per-job overhead, {workers} worker(s): {part['per_job_s'] * 1e3:.3f} ms/job "
                f"({part['jobs']} jobs of 1 dart in {part['seconds']:.2f} s, {part['jobs_per_s']:.0f} jobs/s; "
                f"goal <= {PER_JOB_GOAL_S * 1e3:g} ms: {ok})"
            )
        print(
            f"  of which the master's journal fsync per result: {local['fsync_s'] * 1e3:.3f} ms "
            "(write + fsync of one line in the state directory's file system)"
        )
        start = local["master_startup"]
        print(
            f"master start-up: {start['startup_s'] * 1e3:.0f} ms (pi-job run process {start['process_wall'] * 1e3:.0f} ms "
            f"for a 1-dart run of {start['run_seconds'] * 1e3:.0f} ms; bare `pi-job --version` {start['bare_cli_s'] * 1e3:.0f} ms)"
        )
    lab = fig.get("lab")
    if lab is None:
        print(f"lab: skipped ({fig.get('lab_skipped', 'no --inventory given')})")
        return
    print(
        f"lab {lab['inventory']}: {lab['worker_instances']} worker instances on {lab['cores']} cores "
        f"({lab['machines']} machine(s)); kernel {lab['kernel_rate']:.3g} darts/s per core on a worker"
    )
    for label, part in lab["run_pi_fixed_cost_1e9"].items():
        print(
            f"run_pi.yml fixed cost (darts=1e9, {label.replace('_', ' ')}): {part['fixed_cost_s']:.1f} s "
            f"(playbook {part['playbook_wall']:.1f} s, master {part['run_seconds']:.2f} s)"
        )
    eff = lab["efficiency_run"]
    ok = "ok" if eff["efficiency"] >= EFFICIENCY_GOAL else "BELOW GOAL"
    print(
        f"parallel efficiency: {eff['efficiency'] * 100:.1f} % ({eff['darts']:.3g} darts in {eff['seconds']:.1f} s = "
        f"{eff['darts_per_second']:.3g} darts/s vs ideal {eff['ideal_darts_per_second']:.3g}; "
        f"{eff['jobs']} jobs, {eff['workers']} workers, one per core; goal >= {EFFICIENCY_GOAL:.0%}: {ok})"
    )
    over = lab.get("oversubscribed_run")
    if over:
        print(
            f"  oversubscribed, every instance ({over['workers']} workers on {lab['cores']} cores): "
            f"{over['efficiency'] * 100:.1f} % ({over['darts_per_second']:.3g} darts/s in {over['seconds']:.1f} s)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="tiny jobs for the per-job overhead (default %(default)s)")
    parser.add_argument("--inventory", help="inventory of a deployed lab (e.g. inventory/local) for the lab figures")
    parser.add_argument("--min-seconds", type=float, default=10.0, help="shortest efficiency run (default %(default)s)")
    parser.add_argument("--skip-local", action="store_true", help="only the lab figures")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args()

    fig: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": load_average()}
    if not args.skip_local:
        fig["local"] = measure_local(args.jobs, kernel_rate_local())
    if args.inventory:
        reason = lab_answers(args.inventory)
        if reason:
            fig["lab_skipped"] = f"the lab in {args.inventory} does not answer (scripts/lab.sh up starts it): {reason}"
        else:
            fig["lab"] = measure_lab(args.inventory, args.min_seconds)
    else:
        fig["lab_skipped"] = "no --inventory given"
    fig["load_after"] = load_average()
    if args.out:
        args.out.write_text(json.dumps(fig, indent=2) + "\n")
    if args.json:
        print(json.dumps(fig, indent=2))
    else:
        print_figures(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
