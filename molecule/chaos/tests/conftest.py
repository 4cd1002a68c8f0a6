"""Shared helpers of the chaos scenario: lab hosts, masters on the server, the figures table.

Every test talks to the deployed lab (molecule's containers, real systemd, real beanstalkd with
binlog). The fault table and the other figures are printed at the end of the pytest session
(in molecule's verify output) and written to molecule/chaos/.last-figures.md and .json.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import testinfra

REPO = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
FIGURES_DIR = Path(os.environ.get("CHAOS_FIGURES_DIR") or SCENARIO)
"""Where the figures are written (a partial run can keep the committed ones: CHAOS_FIGURES_DIR)."""
VENV = "/opt/pi-job/venv"
STATE_DIR = "/var/lib/pi-job"
PORT = 11300

# One plan for every chaos run: the count depends only on (seed, darts, job_darts).
SEED = int(os.environ.get("CHAOS_SEED", "20261127"))
DARTS = int(float(os.environ.get("CHAOS_DARTS", "1.6e11")))  # ~10 s on 2 cores: faults land mid-run
JOB_DARTS = int(float(os.environ.get("CHAOS_JOB_DARTS", "8e8")))
MASTER_ARGS = ["--ttr", "10", "--stall-timeout", "180", "--progress-interval", "2", "--connect-timeout", "30"]

SERVER = "mol-chaos-server"
WORKERS = ("mol-chaos-worker1", "mol-chaos-worker2")
OUTSIDER = "mol-chaos-outsider"
INSTANCES = (1, 2)


# ----------------------------------------------------------------------------------------------
# figures


@dataclass
class FaultRow:
    injected: int = 0
    runs: int = 0
    finished: int = 0
    equal: int = 0
    notes: list[str] = field(default_factory=list)


FAULTS: dict[str, FaultRow] = defaultdict(FaultRow)
FIGURES: dict[str, Any] = {"bad_input": {}, "exposure": {}, "runs": [], "security": []}


def record_run(fault: str, injected: int, result: dict | None, expected: Any, note: str = "",
               key: str = "inside") -> None:
    """Account one run of a fault kind in the table.

    ``key`` names the result's value that must equal ``expected``: the count for pi, the sha256
    of C for matmul (shown shortened in the runs table).
    """
    row = FAULTS[fault]
    row.injected += injected
    row.runs += 1
    value = (result or {}).get(key)
    if result is not None:
        row.finished += 1
        if value == expected:
            row.equal += 1
    if note:
        row.notes.append(note)
    FIGURES["runs"].append(
        {
            "fault": fault,
            "injected": injected,
            "run_id": (result or {}).get("run_id"),
            "inside": _short(value),
            "expected": _short(expected),
            "duplicates": (result or {}).get("duplicates"),
            "redeliveries": (result or {}).get("redeliveries"),
            "seconds": (result or {}).get("seconds"),
            "note": note,
        }
    )


def _short(value: Any) -> Any:
    return value[:12] if isinstance(value, str) else value


def fault_table() -> list[str]:
    lines = [
        "| fault | times injected | runs finished | results equal |",
        "|---|---:|---:|---:|",
    ]
    total = FaultRow()
    for name, row in FAULTS.items():
        lines.append(f"| {name} | {row.injected} | {row.finished}/{row.runs} | {row.equal}/{row.runs} |")
        total.injected += row.injected
        total.runs += row.runs
        total.finished += row.finished
        total.equal += row.equal
    lines.append(
        f"| **total** | **{total.injected}** | **{total.finished}/{total.runs}** | **{total.equal}/{total.runs}** |"
    )
    return lines


def figures_markdown() -> str:
    out = ["# Chaos suite: latest figures", ""]
    base = FIGURES.get("baseline")
    if base:
        out.append(
            f"Plan: seed {SEED}, {DARTS:,} darts in jobs of {JOB_DARTS:,}; undisturbed count "
            f"{base['inside']:,} (lab run {base['seconds']:.1f} s; kernel cross-check of "
            f"{base['checked_jobs']} jobs on the controller: equal)."
        )
        out.append("")
    mm = FIGURES.get("matmul_baseline")
    if mm:
        out.append(
            f"Matmul plan: {mm['n']} x {mm['n']} {mm['dtype']} from seed {SEED}, {mm['jobs']} panels of"
            f" {mm['panel_rows']} rows; undisturbed sha256(C) {mm['sha256']} (lab run {mm['seconds']:.1f} s,"
            f" {mm['gflops']:.3g} GFLOP/s, verification {mm['verification']['method']}: ok)."
        )
        out.append("")
    out += ["## Faults", "", *fault_table(), ""]
    runs = FIGURES["runs"]
    if runs:
        out += ["| fault | run id | injected | inside / sha256(C) | expected | duplicates dropped | redeliveries | s |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in runs:
            secs = f"{r['seconds']:.1f}" if isinstance(r["seconds"], int | float) else "-"
            out.append(
                f"| {r['fault']} | {r['run_id']} | {r['injected']} | {r['inside']} | {r['expected']} |"
                f" {r['duplicates']} | {r['redeliveries']} | {secs} |"
            )
        out.append("")
    if FIGURES["bad_input"]:
        out += ["## Bad input", "", "| kind | outcome |", "|---|---|"]
        for kind, msg in FIGURES["bad_input"].items():
            out.append(f"| {kind} | {msg.replace('|', '/')} |")
        out.append("")
    if FIGURES["exposure"]:
        out += ["## systemd-analyze security", ""]
        for unit, value in FIGURES["exposure"].items():
            out.append(f"- {unit}: exposure {value}")
        out.extend(f"- {line}" for line in FIGURES["security"])
        out.append("")
    return "\n".join(out)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not (FAULTS or FIGURES["bad_input"] or FIGURES["exposure"]):
        return
    text = figures_markdown()
    terminalreporter.write_sep("=", "chaos figures")
    terminalreporter.write_line(text)
    try:
        (FIGURES_DIR / ".last-figures.md").write_text(text + "\n")
        data = {
            "faults": {k: vars(v) for k, v in FAULTS.items()},
            **FIGURES,
            "plan": {"seed": SEED, "darts": DARTS, "job_darts": JOB_DARTS},
        }
        (FIGURES_DIR / ".last-figures.json").write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:  # pragma: no cover
        terminalreporter.write_line(f"could not write figures: {exc}")


# ----------------------------------------------------------------------------------------------
# hosts


def inventory_path() -> str:
    inv = os.environ.get("MOLECULE_INVENTORY_FILE")
    if inv and Path(inv).exists():
        return inv
    eph = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    assert eph, "run through molecule (MOLECULE_EPHEMERAL_DIRECTORY unset)"
    return str(Path(eph) / "inventory")


def inventory_dir() -> str:
    eph = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    assert eph, "run through molecule (MOLECULE_EPHEMERAL_DIRECTORY unset)"
    return str(Path(eph) / "inventory")


_HOSTS: dict[str, Any] = {}


def node(name: str):
    """The testinfra host of a lab container (docker exec under the hood)."""
    if name not in _HOSTS:
        _HOSTS[name] = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory_path())
    return _HOSTS[name]


def journal(host, unit: str, lines: int = 40) -> str:
    """The unit's status and last journal lines (for assertion messages)."""
    out = host.run(f"journalctl -u {unit} --no-pager -n {lines} -o short-precise")
    status = host.run(f"systemctl --no-pager status {unit}")
    name = host.backend.get_hostname()
    return f"\n--- {name}: systemctl status {unit}\n{status.stdout}\n--- journalctl -u {unit}\n{out.stdout}{out.stderr}"


def unit_props(host, unit: str, *names: str) -> dict[str, str]:
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {n}" for n in names))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_active(host, unit: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.run(f"systemctl is-active {unit}").stdout.strip() == "active":
            return
        time.sleep(0.5)
    state = host.run(f"systemctl is-active {unit}").stdout.strip()
    raise AssertionError(f"{unit} is {state!r} after {timeout:g} s{journal(host, unit)}")


def wait_all_workers(timeout: float = 120.0) -> None:
    for name in WORKERS:
        for i in INSTANCES:
            wait_active(node(name), f"pi-worker@{i}.service", timeout)


def cluster_address(host) -> str:
    out = host.check_output("ip -4 -o route get 1.1.1.1")
    match = re.search(r"\bsrc (\S+)", out)
    assert match, out
    return match.group(1)


def exposure(host, unit: str) -> float:
    out = host.check_output(f"systemd-analyze security --no-pager {unit} | tail -n 1")
    match = re.search(r"exposure level for \S+: ([0-9.]+)", out)
    assert match, out
    print(f"\n{host.backend.get_hostname()}: {out.strip()}")
    return float(match.group(1))


PIDS_OF = """
import os, re, sys
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        line = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()
    except OSError:
        continue
    if re.search(sys.argv[1], line):
        print(pid)
"""
"""Prints the pids whose command line matches a regex (pgrep is not on minimal nodes)."""


def server_py(code: str, *args: str, timeout: int = 60):
    """Run a Python snippet with the lab venv (greenstalk) on the server."""
    b64 = base64.b64encode(code.encode()).decode()
    argv = " ".join(shlex.quote(a) for a in args)
    cmd = f"timeout {timeout} {VENV}/bin/python -c \"import base64;exec(base64.b64decode('{b64}'))\" {argv}"
    return node(SERVER).run(cmd)


def server_addr() -> str:
    return f"{cluster_address(node(SERVER))}:{PORT}"


def tube_total(tube: str = "pi.jobs", what: str = "total") -> int:
    """total-jobs (or, with what="current", the jobs held now) of a tube (0 if absent)."""
    out = server_py(
        "import sys,greenstalk\n"
        "h,p=sys.argv[1].rsplit(':',1)\n"
        "c=greenstalk.Client((h,int(p)),encoding=None)\n"
        "try:\n s=c.stats_tube(sys.argv[2])\n"
        " print(s['total-jobs'] if sys.argv[3]=='total' else sum(s['current-jobs-'+k] for k in"
        " ('ready','reserved','delayed','buried')))\n"
        "except greenstalk.NotFoundError:\n print(0)\n",
        server_addr(),
        tube,
        what,
    )
    assert out.rc == 0, out.stderr
    return int(out.stdout.strip())


# ----------------------------------------------------------------------------------------------
# masters


class Master:
    """A `pi-job run` started in the background on the server (killable, resumable)."""

    def __init__(self, run_id: str, seed: int = SEED, darts: int = DARTS, job_darts: int = JOB_DARTS):
        self.run_id = run_id
        self.seed, self.darts, self.job_darts = seed, darts, job_darts
        self.host = node(SERVER)
        self.log = f"{STATE_DIR}/logs/{run_id}.log"
        self.rc_file = f"{STATE_DIR}/logs/{run_id}.rc"
        self.output = f"{STATE_DIR}/results/{run_id}.json"
        self.journal = f"{STATE_DIR}/{run_id}.jsonl"

    def start(self, resume: bool = False) -> None:
        if resume:
            what = ["--resume", self.run_id]
        else:
            what = ["--run-id", self.run_id, "--darts", str(self.darts), "--job-darts", str(self.job_darts),
                    "--seed", str(self.seed)]
        argv = [f"{VENV}/bin/pi-job", "run", "--server", server_addr(), *what, *MASTER_ARGS,
                "--state-dir", STATE_DIR, "--output", self.output]
        inner = f"{shlex.join(argv)} >>{self.log} 2>&1; echo $? >{self.rc_file}"
        cmd = (
            f"mkdir -p {STATE_DIR}/logs {STATE_DIR}/results && rm -f {self.rc_file} && "
            f"(PYTHONUNBUFFERED=1 setsid sh -c {shlex.quote(inner)} </dev/null >/dev/null 2>&1 &)"
        )
        out = self.host.run(cmd)
        assert out.rc == 0, out.stderr

    def pid(self) -> int | None:
        # No pgrep on minimal nodes: the lab venv's Python reads /proc.
        pattern = "^" + re.escape(VENV) + "/bin/python[^ ]* .* run .*" + re.escape(self.run_id) + "( |$)"
        out = self.host.run(f"{VENV}/bin/python -c {shlex.quote(PIDS_OF)} {shlex.quote(pattern)}")
        pids = [int(p) for p in out.stdout.split()]
        return pids[0] if pids else None

    def rc(self) -> int | None:
        out = self.host.run(f"cat {self.rc_file}")
        return int(out.stdout.strip()) if out.rc == 0 and out.stdout.strip() else None

    def done_jobs(self) -> int:
        out = self.host.run(f"grep -c '\"type\": *\"result\"' {self.journal}")
        return int(out.stdout.strip() or 0) if out.stdout.strip().isdigit() else 0

    @property
    def jobs(self) -> int:
        return -(-self.darts // self.job_darts)

    def wait_progress(self, at_least: int, timeout: float = 120.0) -> int:
        """Wait until the journal counts at least ``at_least`` results (or the run ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.done_jobs()
            if done >= at_least or self.rc() is not None:
                return done
            time.sleep(0.3)
        raise AssertionError(f"run {self.run_id}: fewer than {at_least} results after {timeout:g} s\n{self.tail()}")

    def running(self) -> bool:
        return self.rc() is None and self.done_jobs() < self.jobs

    def kill(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid:
                self.host.run(f"kill -9 {pid}")
                return
            time.sleep(0.2)
        raise AssertionError(f"master of {self.run_id} not found\n{self.tail()}")

    def wait(self, timeout: float = 300.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.rc()
            if rc is not None:
                return rc
            time.sleep(0.5)
        raise AssertionError(f"run {self.run_id} still going after {timeout:g} s\n{self.tail()}")

    def result(self) -> dict:
        out = self.host.run(f"cat {self.output}")
        assert out.rc == 0, f"no result file {self.output}\n{self.tail()}"
        return json.loads(out.stdout)

    def tail(self, lines: int = 30) -> str:
        return self.host.run(f"tail -n {lines} {self.log}").stdout


def ansible_env() -> dict[str, str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", NO_COLOR="1",
               ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_ROLES_PATH", None)
    return env


def playbook(name: str, *extra: str, timeout: int = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a repository playbook against molecule's inventory (the venv's ansible-playbook)."""
    exe = str(Path(sys.executable).parent / "ansible-playbook")
    return subprocess.run(
        args=[exe, str(REPO / name), "-i", inventory_dir(), *extra],
        check=False, cwd=REPO, env={**ansible_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )


def failure_line(stdout: str) -> str:
    """The `msg` of the first failed task in ansible-playbook output (one line)."""
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("fatal:", "failed:")):
            for follow in lines[i : i + 40]:
                m = re.match(r"\s*msg: (.*)", follow)
                if m:
                    return m.group(1).strip().strip("'\"")
            return line
    return ""


@pytest.fixture(scope="session")
def server():
    return node(SERVER)


def run_id(tag: str) -> str:
    return f"chaos-{tag}-{time.strftime('%H%M%S')}-{os.getpid() % 10000}"


@pytest.fixture(scope="session")
def baseline() -> int:
    """The undisturbed count of the plan: one quiet run on the lab, cross-checked with the kernel."""
    import random

    from pi_job.workloads.pi.kernel import count_inside_range

    wait_all_workers()
    master = Master(run_id("base"))
    master.start()
    rc = master.wait(timeout=300)
    assert rc == 0, master.tail()
    result = master.result()
    assert result["darts"] == DARTS, result
    assert sum(r["inside"] for r in result["per_job"]) == result["inside"]
    assert [r["job"] for r in result["per_job"]] == list(range(master.jobs))
    starts = [0]
    for job in result["per_job"]:
        starts.append(starts[-1] + job["darts"])
    sample = sorted({0, master.jobs - 1, *random.Random(SEED).sample(range(master.jobs), min(6, master.jobs))})
    for index in sample:
        expected = count_inside_range(SEED, starts[index], result["per_job"][index]["darts"])
        assert result["per_job"][index]["inside"] == expected, (index, result["per_job"][index], expected)
    FIGURES["baseline"] = {
        "inside": result["inside"], "seconds": result["seconds"], "checked_jobs": len(sample),
        "run_id": master.run_id, "darts_per_second": result["darts_per_second"],
    }
    print(f"\nundisturbed: {result['inside']} inside of {DARTS} darts, {result['seconds']:.1f} s,"
          f" {result['darts_per_second']:.3g} darts/s; kernel cross-check of jobs {sample}: equal")
    return int(result["inside"])
