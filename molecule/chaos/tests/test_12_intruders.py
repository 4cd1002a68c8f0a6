"""Intruders on the deployed lab: a local user on a worker host, and root on a host the firewall
admits but that has no key.

- A local user (not root, not group pi-queue) of a worker or master host cannot open a
  connection to the queue's port (role pi_queue_guard: nftables output rule by socket owner),
  cannot read the key, and its intruder script fails at connect; the services (pi-worker@N:
  DynamicUser with Group=pi-queue; root) connect.
- Root on an admitted host without the key (the outsider, admitted for this test by adding its
  address to the server's allow-list set) runs a stdlib intruder script (intruder.py) during real
  runs: steals answers, forges answers (wrong count with the MAC kept, removed or made up;
  replays of another run's answers), forges jobs, kicks the buried forgeries, deletes and buries
  real jobs. The runs end with exactly the undisturbed counts and every forged answer counted
  in the summary's `rejected`.
- The key never shows in journalctl, /proc/*/cmdline and environ, `systemctl show` on the
  nodes, nor in `ansible-playbook -vvv` output of the play that installs it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import time
from pathlib import Path

import pytest
from conftest import (
    FIGURES,
    INSTANCES,
    JOB_DARTS,
    OUTSIDER,
    PORT,
    REPO,
    SEED,
    SERVER,
    STATE_DIR,
    VENV,
    WORKERS,
    Master,
    cluster_address,
    journal,
    node,
    playbook,
    record_run,
    run_id,
    server_addr,
    server_py,
    unit_props,
    wait_all_workers,
)

testinfra_hosts = [f"ansible://{SERVER}"]

STUDENT = "pi-student"
GUARD_TABLE = "pi_queue_guard"
GUARD_PLAY = "molecule/chaos/guard.yml"
FIREWALL_TABLE = "pi_beanstalkd"
KEY = "/etc/pi-job/cluster.key"
INTRUDER = Path(__file__).with_name("intruder.py")
CAPTURE_JOBS, CAPTURE_JOB_DARTS = 16, 200_000_000
TARGET_JOBS = 80
"""The attacked run: the plan's first 80 jobs (same seed and job size, so its undisturbed count is
the sum of the baseline run's first 80 jobs)."""

PROBE = (
    "python3 -c \"import socket,sys\n"
    "s=socket.socket(); s.settimeout(5)\n"
    "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(b'stats\\r\\n');"
    " print('OPEN', s.recv(9).decode(errors='replace'))\n"
    "except OSError as e:\n print('BLOCKED', type(e).__name__, e)\" {addr} {port}"
)

# Run as root on a node: how often the key (hex, either case, or raw) appears in the journal,
# in every process's command line and environment, and in `systemctl show` of every unit of the
# project. Prints counts only; also how many journal lines name the key's id (kid), to show the
# journal was really searched.
KEY_SCAN = r"""
import glob, hashlib, json, subprocess
lines = [l.strip() for l in open('/etc/pi-job/cluster.key') if l.strip() and not l.startswith('#')]
needles = [n for l in lines for n in (l.lower().encode(), l.upper().encode(), bytes.fromhex(l))]
kids = [hashlib.sha256(b'pi-job/kid\0' + bytes.fromhex(l)).hexdigest()[:8].encode() for l in lines]
def hits(data):
    return sum(data.count(n) for n in needles)
out = {}
j = subprocess.run(['journalctl', '--no-pager', '-o', 'verbose', '--all'], capture_output=True).stdout
out['journal_bytes'] = len(j)
out['journal'] = hits(j)
out['journal_kid_lines'] = sum(j.count(k) for k in kids)
proc = {'cmdline': 0, 'environ': 0, 'processes': 0}
for path in glob.glob('/proc/[0-9]*'):
    try:
        cmd = open(path + '/cmdline', 'rb').read()
        env = open(path + '/environ', 'rb').read()
    except OSError:
        continue
    proc['processes'] += 1
    proc['cmdline'] += hits(cmd)
    proc['environ'] += hits(env)
out.update(proc)
units = subprocess.run(['systemctl', 'list-units', '--all', '--plain', '--no-legend',
                        'pi-*', 'beanstalkd*'], capture_output=True, text=True).stdout.split()
units = [u for u in units if '.' in u and u.split('.')[-1] in ('service', 'slice')]
show = subprocess.run(['systemctl', 'show', *units], capture_output=True).stdout
out['units'] = len(units)
out['systemctl_show'] = hits(show)
out['systemctl_cat'] = hits(subprocess.run(['systemctl', 'cat', *units], capture_output=True).stdout)
logs = b''.join(open(p, 'rb').read() for p in glob.glob('/var/lib/pi-job/logs/*.log'))
out['master_logs'] = hits(logs)
out['kid_lines'] = out['journal_kid_lines'] + sum(logs.count(k) for k in kids)
print(json.dumps(out))
"""


def put_file(host, path: str, text: str, mode: str = "0644") -> None:
    b64 = base64.b64encode(text.encode()).decode()
    host.check_output(f"echo {b64} | base64 -d >{path} && chmod {mode} {path}")


def probe(host, addr: str, user: str | None = None) -> str:
    cmd = PROBE.format(addr=addr, port=PORT)
    if user:
        cmd = f"runuser -u {user} -- {cmd}"
    return host.check_output(cmd).strip()


def rejected_by_guard(host) -> int:
    """Packets the guard's reject rule has counted on a node."""
    text = host.check_output(f"nft list table inet {GUARD_TABLE}")
    match = re.search(r"counter packets (\d+) bytes \d+ reject", text)
    assert match, text
    return int(match.group(1))


def key_lines() -> list[str]:
    """The cluster key(s) as the controller has them (to search outputs for)."""
    text = (REPO / ".cache" / "cluster.key").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def student():
    for name in (WORKERS[0], SERVER):
        node(name).check_output(f"id -u {STUDENT} >/dev/null 2>&1 || useradd -M -s /bin/sh {STUDENT}")
    return STUDENT


# ----------------------------------------------------------------------------------------------
# local users


def test_guard_admits_the_services_and_root_only(student):
    addr = cluster_address(node(SERVER))
    seen = []
    for name in (WORKERS[0], SERVER):
        host = node(name)
        before = rejected_by_guard(host)
        as_student = probe(host, addr, student)
        as_root = probe(host, addr)
        loopback = probe(host, "127.0.0.1", student)
        after = rejected_by_guard(host)
        print(f"\n{name}: {student} -> {addr}:{PORT}: {as_student}; root: {as_root}; counter +{after - before}")
        assert as_student.startswith("BLOCKED ConnectionRefusedError"), as_student
        assert loopback.startswith("BLOCKED ConnectionRefusedError"), loopback
        assert as_root.startswith("OPEN OK"), as_root
        assert after - before >= 2, (before, after)
        seen.append(f"{name}: {as_student}")
    # root without capabilities, sandboxed like pi-run@ID (its sockets: uid 0)
    sandboxed = node(SERVER).check_output(
        "systemd-run --quiet --wait --pipe -p CapabilityBoundingSet= -p NoNewPrivileges=yes "
        "-p ProtectSystem=strict -p PrivateTmp=yes -p 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' "
        + PROBE.format(addr=addr, port=PORT)
    ).strip()
    assert sandboxed.startswith("OPEN OK"), sandboxed
    # the workers: a dynamic uid, the static group pi-queue as primary gid, and connected
    for name in WORKERS:
        host = node(name)
        gid = int(host.check_output("getent group pi-queue | cut -d: -f3"))
        for i in INSTANCES:
            unit = f"pi-worker@{i}.service"
            pid = unit_props(host, unit, "MainPID")["MainPID"]
            status = host.check_output(f"cat /proc/{pid}/status")
            uid = int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE).group(1))
            gids = [int(g) for g in re.search(r"^Gid:\s+(.*)$", status, re.MULTILINE).group(1).split()]
            assert 61184 <= uid <= 65519, f"{unit}: uid {uid} is not a dynamic user" + journal(host, unit)
            assert gids == [gid] * 4, f"{unit}: gids {gids}, pi-queue is {gid}"
    watching = server_py(
        "import sys,greenstalk\nh,p=sys.argv[1].rsplit(':',1)\n"
        "print(greenstalk.Client((h,int(p))).stats_tube('pi.jobs')['current-watching'])\n",
        server_addr(),
    )
    assert watching.rc == 0, watching.stderr
    assert int(watching.stdout) == len(WORKERS) * len(INSTANCES), watching.stdout
    FIGURES["security"].append(
        f"queue guard: {student} (unprivileged) refused on {', '.join(seen)}; root and sandboxed root OPEN;"
        f" {int(watching.stdout)} worker instances (dynamic uid, gid pi-queue) connected"
    )


def test_local_user_cannot_read_the_key(student):
    host = node(WORKERS[0])
    pid = unit_props(host, "pi-worker@1.service", "MainPID")["MainPID"]
    attempts = {
        "cat /etc/pi-job/cluster.key": f"cat {KEY}",
        "ls /etc/pi-job": "ls /etc/pi-job",
        "cat /run/pi-worker-1/cluster.key": "cat /run/pi-worker-1/cluster.key",
        "ls /run/pi-worker-1": "ls /run/pi-worker-1",
        "worker's /proc/PID/environ": f"cat /proc/{pid}/environ",
    }
    outcomes = {}
    for what, cmd in attempts.items():
        out = host.run(f"runuser -u {student} -- {cmd}")
        outcomes[what] = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.rc}"
        assert out.rc != 0 and out.stdout == "", f"{student}: {cmd}: rc {out.rc}"
        assert "Permission denied" in out.stderr, out.stderr
    # root's copy is there (so the refusals above are about permissions)
    assert host.run(f"test -s {KEY} && test -s /run/pi-worker-1/cluster.key").rc == 0
    print("\n" + "\n".join(f"{student}: {what}: {msg}" for what, msg in outcomes.items()))
    FIGURES["security"].append(f"{student} on {WORKERS[0]}: key file, worker copy, worker environ: Permission denied")


def test_local_user_intruder_script_cannot_connect(student):
    host = node(WORKERS[0])
    put_file(host, "/tmp/intruder.py", INTRUDER.read_text(), "0755")
    out = host.run(
        f"runuser -u {student} -- python3 /tmp/intruder.py {cluster_address(node(SERVER))} {PORT} attack any /dev/null"
    )
    print(f"\n{student} on {WORKERS[0]}: intruder.py: rc {out.rc}: {out.stdout.strip()}")
    assert out.rc == 3, out.stdout + out.stderr
    assert "ConnectionRefusedError" in out.stdout, out.stdout


def guard_table(host) -> str | None:
    """The node's loaded guard table without its counters (None when it is not loaded)."""
    out = host.run(f"nft list table inet {GUARD_TABLE}")
    return re.sub(r"counter packets \d+ bytes \d+", "counter", out.stdout) if out.rc == 0 else None


def run_guard(name: str, enabled: bool) -> tuple[str, float]:
    """Run the guard role alone on one node with pi_queue_guard_enabled; (output, seconds)."""
    start = time.monotonic()
    out = playbook(GUARD_PLAY, "-l", name, "-e", json.dumps({"pi_queue_guard_enabled": enabled}), timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    return text, time.monotonic() - start


def test_guard_disabled_removes_the_table_and_comes_back(student):
    """pi_queue_guard_enabled: false on one worker: table, unit and file gone, the local user gets
    through; true again: all back and the user refused. The node is left as it was."""
    host = node(WORKERS[0])
    addr = cluster_address(node(SERVER))
    before = guard_table(host)
    assert before is not None
    unit, nft_file = "pi-queue-guard.service", f"/etc/nftables.d/{GUARD_TABLE}.nft"
    try:
        _, off_seconds = run_guard(WORKERS[0], False)
        off = {
            "table": guard_table(host),
            "unit": host.run(f"systemctl is-enabled {unit}").stdout.strip(),
            "files": host.run(f"ls /etc/systemd/system/{unit} {nft_file}").rc,
            "student": probe(host, addr, student),
        }
        other = guard_table(node(WORKERS[1]))  # the play ran on one node only
    finally:
        on_text, on_seconds = run_guard(WORKERS[0], True)
    after = {
        "table": guard_table(host),
        "unit": host.run(f"systemctl is-active {unit}").stdout.strip(),
        "student": probe(host, addr, student),
    }
    print(f"\n{WORKERS[0]} guard off ({off_seconds:.0f} s): student {off['student']}; unit {off['unit'] or '-'};"
          f" on again ({on_seconds:.0f} s): student {after['student']}")
    assert off["table"] is None, off["table"]
    assert off["unit"] in ("", "not-found"), off["unit"]
    assert off["files"] != 0, "the unit or the table file is still there"
    assert off["student"].startswith("OPEN OK"), off["student"]
    assert other is not None, f"the guard of {WORKERS[1]} was removed too"
    assert after["table"] == before, after["table"]
    assert after["unit"] == "active", after["unit"]
    assert after["student"].startswith("BLOCKED ConnectionRefusedError"), after["student"]
    assert re.search(r"Install the oneshot unit that loads the table[^\n]*\n+changed: ", on_text), on_text[-3000:]
    FIGURES["security"].append(
        f"queue guard off on {WORKERS[0]} (pi_queue_guard_enabled: false, {off_seconds:.0f} s): table and unit gone,"
        f" {student} connected; on again ({on_seconds:.0f} s): table back, {student} refused"
    )


# ----------------------------------------------------------------------------------------------
# root on an admitted host without the key


@pytest.fixture
def admitted_outsider():
    """The outsider's address in the server's allow-list set (as `beanstalkd_firewall_allowed`
    would put it), removed afterwards; the outsider has no key and no pi_job."""
    server, outsider = node(SERVER), node(OUTSIDER)
    address = outsider.check_output(  # no `ip` on the outsider (it is not provisioned)
        "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
        " s.connect(('1.1.1.1', 1)); print(s.getsockname()[0])\""
    ).strip()
    addr = cluster_address(server)
    assert outsider.run(f"test -e {KEY} || test -e {VENV}").rc != 0
    server.check_output(f"nft add element inet {FIREWALL_TABLE} clients4 '{{ {address} }}'")
    try:
        assert probe(outsider, addr).startswith("OPEN OK")
        put_file(outsider, "/tmp/intruder.py", INTRUDER.read_text(), "0755")
        yield outsider
    finally:
        server.run(f"nft delete element inet {FIREWALL_TABLE} clients4 '{{ {address} }}'")
        seen = probe(outsider, addr)
        assert seen.startswith("BLOCKED"), seen


def intruder(host, *args: str, background: str | None = None, timeout: int = 120):
    addr = cluster_address(node(SERVER))
    argv = shlex.join(["python3", "/tmp/intruder.py", addr, str(PORT), *args])
    if background:
        return host.check_output(f"rm -f {background}; (setsid sh -c {shlex.quote(argv + ' >' + background + ' 2>&1')} </dev/null >/dev/null 2>&1 &)")
    out = host.run(f"timeout {timeout} {argv}")
    assert out.rc == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def buried_reasons() -> dict[int, str]:
    out = node(SERVER).run(f"{VENV}/bin/pi-job status --server {server_addr()} --json")
    assert out.rc == 0, out.stderr
    return {int(r["job_id"]): r["reason"] for r in json.loads(out.stdout)["buried"]}


def test_intruder_without_the_key_changes_no_count(baseline, admitted_outsider):
    from pi_job.workloads.pi.kernel import count_inside_range

    outsider = admitted_outsider
    wait_all_workers()
    # 1. steal answers of a small run as they arrive (kept for replays); that run must redo them
    capture_seed = SEED + 1
    expected_capture = count_inside_range(capture_seed, 0, CAPTURE_JOBS * CAPTURE_JOB_DARTS)
    victim = Master(run_id("victim"), seed=capture_seed, darts=CAPTURE_JOBS * CAPTURE_JOB_DARTS,
                    job_darts=CAPTURE_JOB_DARTS)
    # it watches the run's results tube (a real intruder finds the name with list-tubes)
    intruder(outsider, "capture", victim.run_id, "3", "/tmp/captured.b64", background="/tmp/capture.out")
    time.sleep(1)
    victim.start()
    assert victim.wait(timeout=240) == 0, victim.tail()
    deadline = time.monotonic() + 70
    while outsider.run("grep -q stolen_answers /tmp/capture.out").rc != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    captured = json.loads(outsider.check_output("cat /tmp/capture.out"))
    first = victim.result()
    print(f"\nintruder stole {captured['stolen_answers']} answers of {victim.run_id}: inside {first['inside']}"
          f" (expected {expected_capture}), duplicates {first['duplicates']}, rejected {first['rejected']}")
    assert captured["stolen_answers"] >= 1, captured
    assert first["inside"] == expected_capture
    assert [job["job"] for job in first["per_job"]] == list(range(CAPTURE_JOBS))
    record_run("intruder (admitted host, no key): real answers stolen from the results tube",
               captured["stolen_answers"], first, expected_capture)

    # 2. the attack, during a run of the plan's first TARGET_JOBS jobs
    base = json.loads(node(SERVER).check_output(f"cat {STATE_DIR}/results/{FIGURES['baseline']['run_id']}.json"))
    assert base["inside"] == baseline
    expected = sum(job["inside"] for job in base["per_job"][:TARGET_JOBS])
    target = Master(run_id("intruded"), darts=TARGET_JOBS * JOB_DARTS)
    target.start()
    target.wait_progress(2)
    report = intruder(outsider, "attack", target.run_id, "/tmp/captured.b64", timeout=120)
    rc = target.wait(timeout=400)
    assert rc == 0, target.tail()
    result = target.result()
    forged_answers = len(report["forged_answers"])
    injected = (len(report["forged_jobs"]) + report["kicked"] + report["stolen_answers"] + forged_answers
                + len(report["deleted_jobs"]) + len(report["buried_jobs"]))
    print(f"intruder on {OUTSIDER}: {json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in report.items()})}")
    print(f"run {target.run_id}: inside {result['inside']} (undisturbed {expected}), rejected {result['rejected']},"
          f" duplicates {result['duplicates']}, {result['seconds']:.1f} s")
    record_run("intruder (admitted host, no key): forged/replayed answers, forged jobs + kick, stolen answers,"
               " deleted and buried jobs", injected, result, expected)
    assert result["inside"] == expected
    assert result["rejected"] == forged_answers, (result["rejected"], report)
    assert [job["job"] for job in result["per_job"]] == list(range(target.jobs))
    assert report["stolen_answers"] >= 1 and report["replayed"] >= 1, report
    assert len(report["deleted_jobs"]) == 3 and len(report["buried_jobs"]) == 3, report
    log = target.tail(400)
    assert "gone from the server, pushing them again" in log, log
    assert log.count("was buried, kicked back to ready") == 3, log
    journal_lines = target.host.check_output(f"cat {STATE_DIR}/{target.run_id}.jsonl").splitlines()
    reasons = [json.loads(line).get("reason", "") for line in journal_lines if '"rejected"' in line]
    assert sum(r == "bad signature" for r in reasons) == forged_answers - report["replayed"], reasons
    # the forged jobs: buried as bad signature (again, after the kick), never computed
    reasons_now = buried_reasons()
    for job_id in report["forged_jobs"]:
        assert reasons_now.get(job_id) == "bad signature", (job_id, reasons_now)
    FIGURES["security"].append(
        f"intruder on an admitted host without the key during run {target.run_id}: {forged_answers} forged/replayed"
        f" answers -> rejected {result['rejected']}; {len(report['forged_jobs'])} forged jobs buried 'bad signature'"
        f" (kicked {report['kicked']}, buried again); {report['stolen_answers']} answers stolen, 3 jobs deleted,"
        f" 3 buried -> redone; inside {result['inside']} = undisturbed"
    )
    server_py(
        "import sys,greenstalk\nh,p=sys.argv[1].rsplit(':',1)\nc=greenstalk.Client((h,int(p)))\n"
        "for i in sys.argv[2:]:\n try: c.delete(int(i))\n except greenstalk.NotFoundError: pass\n",
        server_addr(), *map(str, report["forged_jobs"]),
    )


# ----------------------------------------------------------------------------------------------
# the key never shows


def test_key_never_shows_on_the_nodes():
    rows = []
    for name in (SERVER, *WORKERS):
        host = node(name)
        put_file(host, "/tmp/key_scan.py", KEY_SCAN, "0700")
        out = host.run("python3 /tmp/key_scan.py")
        assert out.rc == 0, out.stderr[-2000:]
        found = json.loads(out.stdout)
        print(f"\n{name}: {found}")
        assert found["kid_lines"] > 0, found  # the kid is logged: the right texts were searched
        assert found["processes"] > 5 and found["units"] >= 2, found
        for where in ("journal", "cmdline", "environ", "systemctl_show", "systemctl_cat", "master_logs"):
            assert found[where] == 0, f"{name}: the key appears in {where}"
        rows.append(f"{name}: journal {found['journal_bytes'] // 1024} KiB, {found['processes']} processes,"
                    f" {found['units']} units: 0")
    FIGURES["security"].append("key in journalctl / /proc/*/cmdline+environ / systemctl show+cat: " + "; ".join(rows))


def test_key_never_shows_in_ansible_vvv_output():
    """Remove the key from one worker, so that the play really copies it, at -vvv."""
    lines = key_lines()
    host = node(WORKERS[1])
    before = host.check_output(f"sha256sum {KEY}").split()[0]
    assert before == hashlib.sha256((REPO / ".cache" / "cluster.key").read_bytes()).hexdigest()
    host.check_output(f"rm {KEY}")
    start = time.monotonic()
    out = playbook("playbooks/cluster_key.yml", "-vvv", timeout=600)
    seconds = time.monotonic() - start
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert host.check_output(f"sha256sum {KEY}").split()[0] == before
    assert re.search(r"changed: \[" + re.escape(WORKERS[1]) + r"\]", text), text[-3000:]
    needles = [v for line in lines for v in (line.lower(), line.upper())]
    assert not any(n in text for n in needles), "the key appears in ansible-playbook -vvv output"
    censored = text.count("the output has been hidden due to the fact that")
    print(f"\ncluster_key.yml -vvv: {len(text)} bytes of output, {censored} censored results, key 0 times, {seconds:.0f} s")
    FIGURES["security"].append(
        f"ansible-playbook playbooks/cluster_key.yml -vvv copying the key to {WORKERS[1]}: {len(text) // 1024} KiB"
        f" of output, key 0 times ({censored} results hidden by no_log)"
    )
    wait_all_workers()
