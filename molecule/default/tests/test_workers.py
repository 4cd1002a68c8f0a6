"""The workers: N sandboxed instances, grouped by pi-worker.service, restarted on failure."""

import re
import time

from conftest import assert_active, exposure, journal, unit_props, wait_active

testinfra_hosts = ["ansible://workers"]


def instances(host) -> int:
    return int(host.check_output("grep -c ^processor /proc/cpuinfo"))


def test_instances_active_unprivileged(host):
    for i in range(1, instances(host) + 1):
        unit = f"pi-worker@{i}.service"
        assert_active(host, unit)
        pid = unit_props(host, unit, "MainPID")["MainPID"]
        uid = int(host.check_output(f"stat -c %u /proc/{pid}"))
        assert uid != 0, f"{unit} runs as root{journal(host, unit)}"
        cmdline = host.file(f"/proc/{pid}/cmdline").content_string.replace("\0", " ")
        assert "worker --server" in cmdline, cmdline


def test_no_surplus_instances(host):
    listed = host.check_output("systemctl list-units --plain --no-legend --state=active 'pi-worker@*.service'")
    assert len(listed.splitlines()) == instances(host), listed


OPERATOR = "operator1"  # no root, not in systemd-journal or adm: cannot read the journal


def operator_status(host, unit: str = "pi-worker") -> str:
    """`systemctl status UNIT` as an unprivileged user (created once, no home)."""
    host.run(f"id -u {OPERATOR} || useradd -M -s /usr/sbin/nologin {OPERATOR}")
    out = host.run(f"runuser -u {OPERATOR} -- systemctl --no-pager status {unit}")
    assert out.rc == 0, f"rc={out.rc}\n{out.stdout}{out.stderr}"
    return out.stdout


def status_line(host) -> str:
    """The Status: line of pi-worker.service as an unprivileged user sees it."""
    out = operator_status(host)
    match = re.search(r'^\s*Status: "(.*)"$', out, re.MULTILINE)
    assert match, out
    return match.group(1)


def instance_states(line: str) -> dict[int, str]:
    """{N: state} from '3 workers: 2 idle, 1 stopped | @1 idle | @2 run R job 5: 40% | @3 stopped'."""
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"\| @(\d+) ([^|]*[^| ])", line)}


def all_running(line: str, n: int) -> bool:
    """Instances 1..n each report what they do: idle, a job, or connecting."""
    states = instance_states(line)
    return sorted(states) == list(range(1, n + 1)) and all(
        state == "idle" or state.startswith(("run ", "connecting to ")) for state in states.values()
    )


def wait_status(host, predicate, timeout: float = 10.0) -> str:
    """Poll the operator's Status: line until predicate(line) holds; return that line."""
    deadline = time.monotonic() + timeout
    line = status_line(host)
    while not predicate(line) and time.monotonic() < deadline:
        time.sleep(0.5)
        line = status_line(host)
    assert predicate(line), f"status line did not change in {timeout} s: {line!r}"
    return line


def test_group_status_unprivileged_live(host):
    """Any user sees every instance and what it does (STATUS= of each), no journal needed."""
    out = operator_status(host)
    groups = host.check_output(f"id -nG {OPERATOR}").split()
    assert not {"root", "adm", "systemd-journal"} & set(groups), groups
    print(f"\n{out}")
    assert "Active: active (running)" in out, out
    n = instances(host)
    # Right after a (re)start the instances may still be starting: wait until all run.
    line = wait_status(host, lambda s: all_running(s, n), timeout=60)
    assert line.startswith(f"{n} workers: "), line
    assert sorted(instance_states(line)) == list(range(1, n + 1)), line


def test_group_status_follows_instances(host):
    """Stopping an instance shows within seconds in the operator's view, starting it again too."""
    n = instances(host)
    wait_status(host, lambda s: all_running(s, n), timeout=60)
    host.check_output("systemctl stop pi-worker@2.service")
    try:
        line = wait_status(host, lambda s: instance_states(s).get(2) == "stopped")
        print(f"\nafter stop: {line}")
        assert "1 stopped" in line.split(" | ")[0], line
    finally:
        host.check_output("systemctl start pi-worker@2.service")
    line = wait_status(host, lambda s: instance_states(s).get(2) == "idle", timeout=60)
    print(f"after start: {line}")
    assert "stopped" not in line, line


def test_group_slice_tree(host):
    out = operator_status(host, "pi-worker.slice")
    for i in range(1, instances(host) + 1):
        assert f"pi-worker@{i}.service" in out, out
    assert "pi-worker.service" in out, out


def test_group_stop_start_all(host):
    """systemctl stop pi-worker stops every instance (PartOf=), start brings them all back."""
    n = instances(host)
    host.check_output("systemctl stop pi-worker")
    for i in range(1, n + 1):
        state = host.run(f"systemctl is-active pi-worker@{i}.service").stdout.strip()
        assert state in ("inactive", "failed"), f"pi-worker@{i} is {state} after stop"
    host.check_output("systemctl start pi-worker")
    for i in range(1, n + 1):
        wait_active(host, f"pi-worker@{i}.service")
    assert_active(host, "pi-worker.service")
    line = wait_status(host, lambda s: len(instance_states(s)) == n and "stopped" not in s, timeout=30)
    print(f"\nafter start: {line}")


def test_group_status_crash_leaves_workers(host):
    """The status process has no Restart= (it would restart every PartOf= instance): a crash only
    fails pi-worker.service; `systemctl start pi-worker` brings the status back."""
    before = unit_props(host, "pi-worker@1.service", "MainPID")["MainPID"]
    main = unit_props(host, "pi-worker.service", "MainPID")["MainPID"]
    host.run(f"kill -9 {main}")
    time.sleep(2)
    assert host.run("systemctl is-active pi-worker.service").stdout.strip() == "failed"
    assert unit_props(host, "pi-worker@1.service", "MainPID")["MainPID"] == before
    host.check_output("systemctl start pi-worker")
    assert_active(host, "pi-worker.service")
    assert unit_props(host, "pi-worker@1.service", "MainPID")["MainPID"] == before
    assert status_line(host).startswith(f"{instances(host)} workers: ")


def test_worker_restarted_after_kill(host):
    unit = "pi-worker@1.service"
    props = unit_props(host, unit, "MainPID", "NRestarts")
    host.run(f"kill -9 {props['MainPID']}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = unit_props(host, unit, "MainPID", "NRestarts", "ActiveState")
        if int(now["NRestarts"]) > int(props["NRestarts"]) and now["ActiveState"] == "active":
            break
        time.sleep(1)
    now = unit_props(host, unit, "MainPID", "NRestarts", "ActiveState")
    assert int(now["NRestarts"]) > int(props["NRestarts"]), f"not restarted: {now}{journal(host, unit)}"
    wait_active(host, unit)
    assert now["MainPID"] != props["MainPID"]


def test_restart_group_restarts_instances(host):
    before = unit_props(host, "pi-worker@2.service", "MainPID")["MainPID"]
    host.check_output("systemctl restart pi-worker")
    wait_active(host, "pi-worker@2.service")
    after = unit_props(host, "pi-worker@2.service", "MainPID")["MainPID"]
    assert after != before, journal(host, "pi-worker@2.service")


def test_numba_cache_dir(host):
    env = unit_props(host, "pi-worker@1.service", "Environment")["Environment"]
    assert "NUMBA_CACHE_DIR=/var/cache/pi-worker" in env


def test_worker_exposure(host):
    assert exposure(host, "pi-worker@1.service") <= 1.5


def test_group_exposure(host):
    assert exposure(host, "pi-worker.service") <= 1.0
