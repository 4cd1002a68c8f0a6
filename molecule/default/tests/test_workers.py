"""The workers: N sandboxed instances, grouped by pi-worker.service, restarted on failure."""

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


def test_group_status_lists_instances(host):
    out = host.run("systemctl --no-pager status pi-worker")
    assert out.rc == 0, out.stdout + out.stderr
    print(f"\n{out.stdout}")
    for i in range(1, instances(host) + 1):
        assert f"pi-worker@{i}.service" in out.stdout, out.stdout


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
