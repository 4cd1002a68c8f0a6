"""site.yml repairs drift that its read-only probes must notice, then changes nothing.

beanstalkd, pi_job, pi_cluster_key, pi_worker, pi_master and pi_nft_table each run one probe and skip their
install and configure steps when its output is the expected state: a thing a step manages that the
probe does not read would never be repaired. This test drifts several of them at once on the
queue server (also the master) and on one worker, runs site.yml like the scenario's converge,
checks every drifted thing is back exactly as it was (content, mode, owner, link target, unit
state, the loaded unit) and the services are active, then runs site.yml again: changed=0 on every
host. The lab is converged again if the test fails midway.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import testinfra
from conftest import REPO, assert_active, unit_props

# No `host` fixture: the test reaches the two nodes itself (one test, in order).
DRIFT = "PI_REPAIR_DRIFT=1"

# Files and directories: (node, path, shell drift commands). The key is never printed: only its
# mode, owner and sha256 are read.
PATHS = {
    "server": [
        ("/etc/systemd/system/beanstalkd.service",
         f"printf '[Service]\\nEnvironment={DRIFT}\\n' >> {{p}}; chmod 0600 {{p}}"),
        ("/var/lib/beanstalkd", "chmod 0755 {p}"),
        ("/usr/local/bin/pi-job", "rm -f {p}"),
        ("/etc/pi-job", "chmod 0755 {p}"),
        ("/etc/pi-job/cluster.key", "chmod 0644 {p}"),
        ("/etc/profile.d/pi-job.sh", "echo 'export PI_REPAIR_DRIFT=1' >> {p}; chown nobody:nogroup {p}"),
        ("/var/lib/pi-job/runs", "chmod 0755 {p}"),
        ("/opt/pi-job/wheels", "chmod 0700 {p}"),
        ("/etc/systemd/system/pi-run@.service", "chmod 0600 {p}"),
    ],
    "worker": [
        ("/etc/systemd/system/pi-worker@.service",
         f"printf '[Service]\\nEnvironment={DRIFT}\\n' >> {{p}}; chmod 0600 {{p}}"),
        ("/usr/local/libexec/pi-worker-status", "chmod 0700 {p}"),
        ("/etc/systemd/system/pi-worker.slice", "echo '# drift' >> {p}"),
        ("/etc/pi-job/cluster.key", "chown root:nogroup {p}; chmod 0640 {p}"),
        ("/usr/local/bin/pi-job", "ln -sfn /bin/true {p}"),
        # pip's entry point, which the worker units run (the probe once trusted the wheel record).
        ("/opt/pi-job/venv/bin/pi-job", "rm -f {p}"),
        # the queue guard's table (pi_nft_table's probe reads its checksum, mode and owner)
        ("/etc/nftables.d/pi_queue_guard.nft", "echo '# drift' >> {p}; chown nobody:nogroup {p}"),
    ],
}

# System accounts: (node, name, drift command); their passwd entry must come back.
ACCOUNTS = [
    ("server", "beanstalkd", "usermod -s /bin/sh beanstalkd"),
    ("worker", "pi-worker-status", "usermod -s /bin/bash -c drifted pi-worker-status"),
]

# What site.yml writes there (checked before the drift, so "back as before" means "back right").
EXPECTED = {
    "/etc/systemd/system/beanstalkd.service": "644 root root",
    "/var/lib/beanstalkd": "750 beanstalkd beanstalkd",
    "/usr/local/bin/pi-job": "777 root root",
    "/etc/pi-job": "700 root root",
    "/etc/pi-job/cluster.key": "600 root root",
    "/etc/profile.d/pi-job.sh": "644 root root",
    "/var/lib/pi-job/runs": "750 root root",
    "/opt/pi-job/wheels": "755 root root",
    "/etc/systemd/system/pi-worker.slice": "644 root root",
    "/opt/pi-job/venv/bin/pi-job": "755 root root",
    "/etc/systemd/system/pi-run@.service": "644 root root",
    "/etc/systemd/system/pi-worker@.service": "644 root root",
    "/usr/local/libexec/pi-worker-status": "755 root root",
    "/etc/nftables.d/pi_queue_guard.nft": "644 root root",
}


def site(inventory_dir: str) -> subprocess.CompletedProcess:
    """site.yml with the scenario's inventory (and its group_vars), as the converge runs it."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env.pop("ANSIBLE_ROLES_PATH", None)
    return subprocess.run(
        ["ansible-playbook", str(REPO / "site.yml"), "-i", inventory_dir],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP: host -> {ok, changed, failed, ...}."""
    out: dict[str, dict[str, int]] = {}
    tail = stdout.split("PLAY RECAP", 1)[-1]
    for m in re.finditer(r"^(\S+)\s+:\s+(.*)$", tail, re.MULTILINE):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def path_state(node, path: str) -> str:
    """Mode, owner, group, type and sha256 (file) or target (link); 'missing' when absent."""
    q = f"'{path}'"
    out = node.run(
        f"if [ -L {q} ]; then echo \"$(stat -c '%a %U %G' {q}) link $(readlink {q})\";"
        f" elif [ -d {q} ]; then echo \"$(stat -c '%a %U %G' {q}) dir\";"
        f" elif [ -f {q} ]; then echo \"$(stat -c '%a %U %G' {q}) file $(sha256sum < {q} | cut -c1-64)\";"
        " else echo missing; fi"
    )
    return out.stdout.strip()


def unit_state(node, unit: str) -> str:
    enabled = node.run(f"systemctl is-enabled {unit}").stdout.strip()
    active = node.run(f"systemctl is-active {unit}").stdout.strip()
    return f"{enabled} {active}"


@pytest.fixture(scope="module")
def nodes(request) -> dict[str, object]:
    opt = request.config.option
    kwargs = {"connection": opt.connection, "ansible_inventory": opt.ansible_inventory,
              "force_ansible": opt.force_ansible}
    server = testinfra.get_hosts(["ansible://beanstalkd"], **kwargs)[0]
    worker = min(testinfra.get_hosts(["ansible://workers"], **kwargs), key=lambda h: h.backend.get_pytest_id())
    return {"server": server, "worker": worker}


def test_site_repairs_drift_then_changes_nothing(nodes, inventory_dir):
    server, worker = nodes["server"], nodes["worker"]
    n = int(worker.check_output("nproc"))  # pi_worker_instances defaults to the vCPUs
    last = f"pi-worker@{n}.service"
    units = {"server": ["beanstalkd.service", "beanstalkd.socket"],
             "worker": [last, "pi-worker.service", "pi-queue-guard.service"]}

    before = {(k, p): path_state(nodes[k], p) for k, items in PATHS.items() for p, _ in items}
    before_accounts = {(k, a): nodes[k].check_output(f"getent passwd {a}") for k, a, _ in ACCOUNTS}
    before_units = {(k, u): unit_state(nodes[k], u) for k, us in units.items() for u in us}
    for (_, p), state in before.items():
        assert state.startswith(EXPECTED[p] + " "), f"{p} before the drift: {state}"
    assert before_units[("server", "beanstalkd.socket")] == "masked inactive", before_units
    assert before_units[("server", "beanstalkd.service")] == "enabled active", before_units
    assert before_units[("worker", last)] == "enabled active", before_units
    assert before_units[("worker", "pi-worker.service")] == "enabled active", before_units
    assert before_units[("worker", "pi-queue-guard.service")] == "enabled active", before_units

    # The drifted entries themselves (no directory contents), kept on the node to put back if
    # site.yml does not repair them: the lab stays usable for the other tests.
    backup = "/root/.pi-repair-drift.tar"
    for k, items in PATHS.items():
        nodes[k].check_output(f"tar -C / --no-recursion -cpf {backup} " + " ".join(f"'{p[1:]}'" for p, _ in items))
    passed = False
    try:
        for k, items in PATHS.items():
            for p, cmd in items:
                nodes[k].check_output(cmd.format(p=f"'{p}'"))
        for k, _, cmd in ACCOUNTS:
            nodes[k].check_output(cmd)
        server.check_output("systemctl unmask beanstalkd.socket && systemctl disable beanstalkd.service")
        worker.check_output(f"systemctl disable --now {last} && systemctl disable pi-worker.service"
                            " pi-queue-guard.service")
        for node in (server, worker):
            node.check_output("systemctl daemon-reload")
        # The drift is real: every item now differs, the drifted units are loaded.
        drifted = {(k, p): path_state(nodes[k], p) for k, p in before}
        assert all(drifted[key] != before[key] for key in before), drifted
        assert unit_state(server, "beanstalkd.socket") != "masked inactive"
        assert unit_state(worker, last) == "disabled inactive"
        assert DRIFT in unit_props(server, "beanstalkd.service", "Environment")["Environment"]

        out = site(inventory_dir)
        print(out.stdout[-2500:])
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]

        after = {(k, p): path_state(nodes[k], p) for k, p in before}
        wrong = {f"{k}:{p}": (before[(k, p)], after[(k, p)]) for k, p in before if after[(k, p)] != before[(k, p)]}
        assert not wrong, f"not repaired (before, after): {wrong}"
        after_accounts = {key: nodes[key[0]].check_output(f"getent passwd {key[1]}") for key in before_accounts}
        assert after_accounts == before_accounts, after_accounts
        after_units = {key: unit_state(nodes[key[0]], key[1]) for key in before_units}
        assert after_units == before_units, after_units
        # The repaired unit files are the loaded ones (daemon-reload, restart), not only on disk.
        for node, unit in ((server, "beanstalkd.service"), (worker, "pi-worker@1.service")):
            props = unit_props(node, unit, "Environment", "NeedDaemonReload")
            assert DRIFT not in props["Environment"] and props["NeedDaemonReload"] == "no", (unit, props)
        assert_active(server, "beanstalkd.service")
        assert_active(worker, "pi-worker.service")
        for i in range(1, n + 1):
            assert_active(worker, f"pi-worker@{i}.service")

        again = site(inventory_dir)
        assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-2000:]
        counts = recap(again.stdout)
        print({h: c.get("changed") for h, c in counts.items()})
        assert counts and all(c.get("changed") == 0 and c.get("failed") == 0 for c in counts.values()), \
            again.stdout[-6000:]
        passed = True
    finally:
        if not passed:
            for k in PATHS:
                nodes[k].run(f"tar -C / -xpf {backup} && systemctl daemon-reload")
            server.run("systemctl mask beanstalkd.socket; systemctl enable beanstalkd.service")
            worker.run(f"systemctl enable --now {last}; systemctl enable pi-worker.service pi-queue-guard.service")
            server.run("usermod -s /usr/sbin/nologin beanstalkd")
            worker.run("usermod -s /usr/sbin/nologin -c 'pi-worker.service status (reads unit states over D-Bus)' pi-worker-status")
            site(inventory_dir)
        for k in PATHS:
            nodes[k].run(f"rm -f {backup}")
