"""Security of the deployed lab: firewall, bind address, unprivileged sandboxed services."""

from __future__ import annotations

from conftest import (
    FIGURES,
    OUTSIDER,
    PORT,
    SERVER,
    WORKERS,
    cluster_address,
    exposure,
    journal,
    node,
    unit_props,
)

testinfra_hosts = [f"ansible://{SERVER}"]

PROBE = (
    "python3 -c \"import socket,sys\n"
    "s=socket.socket(); s.settimeout(3)\n"
    "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(b'stats\\r\\n');"
    " print('OPEN', s.recv(9).decode(errors='replace'))\n"
    "except OSError as e:\n print('BLOCKED', type(e).__name__, e)\" {addr} {port}"
)


def probe(host, addr: str) -> str:
    return host.check_output(PROBE.format(addr=addr, port=PORT)).strip()


def test_outsider_is_not_in_the_cluster_groups():
    out = node(OUTSIDER).run("test -e /opt/pi-job/venv || systemctl cat beanstalkd.service")
    assert out.rc != 0, "site.yml provisioned the outsider"


def test_outsider_cannot_connect_workers_can():
    addr = cluster_address(node(SERVER))
    outsider = probe(node(OUTSIDER), addr)
    print(f"\n{OUTSIDER} -> {addr}:{PORT}: {outsider}")
    assert outsider.startswith("BLOCKED"), outsider
    for name in WORKERS:
        seen = probe(node(name), addr)
        print(f"{name} -> {addr}:{PORT}: {seen}")
        assert seen.startswith("OPEN OK"), seen
    server = node(SERVER)
    drops = server.check_output("nft list table inet pi_beanstalkd")
    assert "counter packets 0 " not in drops, drops  # the outsider's SYNs hit the drop rule
    FIGURES["security"].append(f"firewall: {OUTSIDER} -> {addr}:{PORT}: {outsider}; workers: OPEN")


def test_bound_to_cluster_address_only():
    server = node(SERVER)
    addr = cluster_address(server)
    listening = server.check_output(f"ss -Htln 'sport = :{PORT}' | awk '{{print $4}}'").split()
    assert listening == [f"{addr}:{PORT}"], listening


def test_services_run_unprivileged():
    server = node(SERVER)
    pid = unit_props(server, "beanstalkd.service", "MainPID")["MainPID"]
    user = server.check_output(f"stat -c %U /proc/{pid}").strip()  # no procps on minimal nodes
    assert user == "beanstalkd", user + journal(server, "beanstalkd.service")
    for name in WORKERS:
        host = node(name)
        for i in (1, 2):
            unit = f"pi-worker@{i}.service"
            pid = unit_props(host, unit, "MainPID")["MainPID"]
            uid = int(host.check_output(f"stat -c %u /proc/{pid}"))
            assert uid != 0, f"{unit} on {name} runs as root" + journal(host, unit)


def test_job_size_bounded():
    server = node(SERVER)
    pid = unit_props(server, "beanstalkd.service", "MainPID")["MainPID"]
    cmdline = server.file(f"/proc/{pid}/cmdline").content_string.split("\0")
    # -z is the role's largest body (16 MiB) + 2, -s one binlog file >= -z + 4 KiB.
    assert "-z" in cmdline and int(cmdline[cmdline.index("-z") + 1]) == 16 * 2**20 + 2, cmdline
    assert "-s" in cmdline and int(cmdline[cmdline.index("-s") + 1]) >= 16 * 2**20 + 2 + 4096, cmdline
    assert "-b" in cmdline, cmdline


def test_exposure_figures():
    worker = exposure(node(WORKERS[0]), "pi-worker@1.service")
    queue = exposure(node(SERVER), "beanstalkd.service")
    FIGURES["exposure"]["pi-worker@1.service"] = worker
    FIGURES["exposure"]["beanstalkd.service"] = queue
    print(f"exposure: pi-worker@1.service {worker} (limit 1.5), beanstalkd.service {queue} (limit 2.0)")
    assert worker <= 1.5
    assert queue <= 2.0
