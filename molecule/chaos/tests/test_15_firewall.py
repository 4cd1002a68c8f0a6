"""Changing the firewall's allow-list on the deployed lab: it never fails open.

The queue server's play (molecule/chaos/firewall.yml: facts + the beanstalkd role) is re-run with
other `beanstalkd_firewall_allowed` values. During each run two watchers sample the lab: one on
the server lists the table in a loop (a sample without it counts as a gap), one on the outsider
tries to connect to the port in a loop. An overlapping subnet is merged and loads; a malformed
address or a host name fails the play with one line naming the value and leaves the loaded table
exactly as it was. The normal value is restored at the end (also when a test fails).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from typing import Self

import pytest
from conftest import (
    FIGURES,
    OUTSIDER,
    PORT,
    SERVER,
    WORKERS,
    cluster_address,
    node,
    playbook,
)

testinfra_hosts = [f"ansible://{SERVER}"]

PLAY = "molecule/chaos/firewall.yml"
TABLE = "pi_beanstalkd"
NFT_FILE = f"/etc/nftables.d/{TABLE}.nft"
UNIT = "pi-beanstalkd-firewall.service"
GUARD_TABLE, GUARD_UNIT = "pi_queue_guard", "pi-queue-guard.service"
BOTH_PLAY = "molecule/chaos/tables.yml"  # beanstalkd + pi_queue_guard in one play

# Inside the lab's 172.30.70.0/24: .8/30 holds the server (.10) and worker1 (.11), not the outsider
# (.20); the single addresses repeat what the subnet and the client list already hold.
OVERLAP = [
    "172.30.70.8/30",
    "172.30.70.10",
    "172.30.70.11/32",
    "fd00:70::/64",
    "fd00:70::5",
]
BAD = {
    "malformed address": "172.30.70.300",
    "prefix too long": "10.1.2.0/33",
    "host name": OUTSIDER,  # would let the outsider in if it were resolved
}

WATCH_TABLE = (
    "rm -f /tmp/fw-watch.stop; (setsid sh -c 'n=0; while [ ! -e /tmp/fw-watch.stop ]; do"
    f" if nft list table inet {TABLE} >/dev/null 2>&1; then echo ok; else echo GONE; fi;"
    " done >/tmp/fw-watch.log; touch /tmp/fw-watch.done' </dev/null >/dev/null 2>&1 &)"
)
WATCH_PORT = (
    'rm -f /tmp/fw-watch.stop; (setsid python3 -c "import os,socket,sys,time\n'
    "out=open('/tmp/fw-watch.log','w')\n"
    "while not os.path.exists('/tmp/fw-watch.stop'):\n"
    " s=socket.socket(); s.settimeout(0.3)\n"
    " try:\n  s.connect((sys.argv[1], int(sys.argv[2]))); out.write('OPEN\\n')\n"
    " except OSError:\n  out.write('blocked\\n')\n"
    " finally:\n  s.close()\n"
    "out.close(); open('/tmp/fw-watch.done','w').close()\" {addr} {port} </dev/null >/dev/null 2>&1 &)"
)


class Watchers:
    """Sample the table on the server and the port from the outsider until stopped."""

    def __enter__(self) -> Self:
        self.addr = cluster_address(node(SERVER))
        for name in (SERVER, OUTSIDER):
            node(name).check_output("rm -f /tmp/fw-watch.done /tmp/fw-watch.log")
        node(SERVER).check_output(WATCH_TABLE)
        node(OUTSIDER).check_output(WATCH_PORT.format(addr=self.addr, port=PORT))
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.samples: dict[str, list[str]] = {}
        for name in (SERVER, OUTSIDER):
            host = node(name)
            host.check_output("touch /tmp/fw-watch.stop")
            deadline = time.monotonic() + 10
            while (
                host.run("test -e /tmp/fw-watch.done").rc != 0
                and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            self.samples[name] = host.check_output("cat /tmp/fw-watch.log").split()

    @property
    def table_samples(self) -> int:
        return len(self.samples[SERVER])

    @property
    def gaps(self) -> int:
        return self.samples[SERVER].count("GONE")

    @property
    def probes(self) -> int:
        return len(self.samples[OUTSIDER])

    @property
    def opened(self) -> int:
        return self.samples[OUTSIDER].count("OPEN")

    def summary(self) -> str:
        return (
            f"table listed {self.table_samples} times, missing {self.gaps}; "
            f"outsider connect attempts {self.probes}, open {self.opened}"
        )


def table(name: str = TABLE) -> str:
    """The loaded table without its counters (they move with the traffic)."""
    out = node(SERVER).check_output(f"nft list table inet {name}")
    return re.sub(r"counter packets \d+ bytes \d+", "counter", out)


def set_elements(text: str) -> str:
    return " ".join(re.findall(r"elements = \{([^}]*)\}", text.replace("\n", " ")))


def run_play(allowed: list[str] | None) -> tuple[int, str, str, float]:
    """(return code, msg of the failed task, output, seconds) of the server's play."""
    extra = (
        ["-e", json.dumps({"beanstalkd_firewall_allowed": allowed})]
        if allowed is not None
        else []
    )
    start = time.monotonic()
    out = playbook(
        PLAY, *extra, env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}, timeout=600
    )
    seconds = time.monotonic() - start
    msg = ""
    for line in out.stdout.splitlines():
        if line.startswith(("fatal:", "failed:")) and "=> " in line:
            msg = str(json.loads(line.split("=> ", 1)[1]).get("msg", ""))
            break
    return out.returncode, msg, out.stdout + out.stderr, seconds


def assert_outsider_blocked_workers_open() -> None:
    addr = cluster_address(node(SERVER))
    probe = (
        'python3 -c "import socket,sys\ns=socket.socket(); s.settimeout(3)\n'
        "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print('OPEN')\n"
        "except OSError as e:\n print('BLOCKED', e)\" {addr} {port}"
    )
    seen = node(OUTSIDER).check_output(probe.format(addr=addr, port=PORT)).strip()
    assert seen.startswith("BLOCKED"), f"{OUTSIDER} -> {addr}:{PORT}: {seen}"
    for name in WORKERS:
        seen = node(name).check_output(probe.format(addr=addr, port=PORT)).strip()
        assert seen == "OPEN", f"{name} -> {addr}:{PORT}: {seen}"


@pytest.fixture(scope="module")
def normal_table():
    """The table of the normal value; restored (and compared) at the end of the module."""
    before = table()
    yield before
    if node(SERVER).run("test -x /usr/sbin/nft").rc != 0 or table() != before:
        code, msg, text, _ = run_play(None)
        assert code == 0, msg + text[-3000:]
        assert table() == before


def test_unit_stop_restart_reload_never_drop_the_table(normal_table):
    server = node(SERVER)
    with Watchers() as watch:
        for action in ("reload", "restart", "stop"):
            server.check_output(f"systemctl {action} {UNIT}")
        stopped = server.run(f"nft list table inet {TABLE}")
        server.check_output(f"systemctl start {UNIT}")
    print(f"\nsystemctl reload/restart/stop/start {UNIT}: {watch.summary()}")
    assert stopped.rc == 0, "stopping the unit removed the table"
    assert watch.table_samples > 20 and watch.probes > 3, watch.summary()
    assert watch.gaps == 0, watch.summary()
    assert watch.opened == 0, watch.summary()
    assert table() == normal_table
    FIGURES["security"].append(f"unit reload/restart/stop/start: {watch.summary()}")


def test_unit_reload_of_a_refused_file_keeps_the_table(normal_table):
    """A file nft refuses (overlapping elements in a set without auto-merge): reload fails, table stays."""
    server = node(SERVER)
    server.check_output(f"cp {NFT_FILE} /tmp/fw-good.nft")
    bad = (
        f"table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n set s {{\n"
        "  type ipv4_addr\n  flags interval\n  elements = { 10.9.0.0/24, 10.9.0.1 }\n }\n}\n"
    )
    try:
        server.check_output(f"printf %s {shlex.quote(bad)} >{NFT_FILE}")
        reload = server.run(f"systemctl reload {UNIT}")
        state = server.run(f"systemctl is-active {UNIT}").stdout.strip()
    finally:
        server.check_output(f"cp /tmp/fw-good.nft {NFT_FILE}")
    error = server.run(
        f"journalctl -u {UNIT} -n 8 --no-pager | grep -m1 Error:"
    ).stdout.strip()
    print(f"\nreload of a refused file: rc {reload.rc}; unit {state}; {error}")
    assert reload.rc != 0, reload.stdout
    assert "conflicting intervals" in error, error
    assert state == "active", state
    assert table() == normal_table
    assert_outsider_blocked_workers_open()


def test_overlapping_subnet_is_merged(normal_table):
    with Watchers() as watch:
        code, msg, text, seconds = run_play(OVERLAP)
    print(
        f"\nbeanstalkd_firewall_allowed={OVERLAP}: rc {code}, {seconds:.1f} s; {watch.summary()}"
    )
    assert code == 0, msg + text[-3000:]
    written = set_elements(node(SERVER).check_output(f"cat {NFT_FILE}"))
    loaded = table()
    elements = set_elements(loaded)
    print(f"set elements written: {written}; loaded: {elements}")
    # The role merged them (10, 11/32 and 11 inside 8/30; ::5 inside ::/64) ...
    assert written.split() == ["172.30.70.8/30,", "172.30.70.12", "fd00:70::/64"], (
        written
    )
    assert "auto-merge" in loaded, loaded
    # ... and the kernel holds exactly that: .9 (only in the subnet) is in, the outsider is not.
    server = node(SERVER)
    for addr, inside in (
        ("172.30.70.9", True),
        ("172.30.70.12", True),
        ("172.30.70.20", False),
    ):
        got = (
            server.run(f"nft get element inet {TABLE} clients4 '{{ {addr} }}'").rc == 0
        )
        assert got == inside, (addr, loaded)
    v6 = server.run(f"nft get element inet {TABLE} clients6 '{{ fd00:70::1234 }}'")
    assert v6.rc == 0, loaded
    assert watch.gaps == 0 and watch.opened == 0, watch.summary()
    assert_outsider_blocked_workers_open()
    FIGURES["security"].append(
        f"overlapping allow-list {OVERLAP}: loaded as {{{elements.strip()}}} in {seconds:.0f} s"
    )


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_value_fails_with_one_line_and_keeps_the_table(kind, normal_table):
    value = BAD[kind]
    before = table()
    with Watchers() as watch:
        code, msg, text, seconds = run_play(["192.0.2.7", value])
    print(
        f"\nbeanstalkd_firewall_allowed=[192.0.2.7, {value}]: rc {code}, {seconds:.1f} s: {msg}; {watch.summary()}"
    )
    FIGURES["bad_input"][f"beanstalkd_firewall_allowed: {value} ({kind})"] = (
        msg or "(no message)"
    )
    assert code != 0, text[-3000:]
    assert f'"{value}"' in msg and "\n" not in msg, msg + text[-3000:]
    assert "192.0.2.7" not in msg, msg  # only the bad value is named
    assert table() == before, "the loaded table changed"
    assert watch.gaps == 0 and watch.opened == 0, watch.summary()
    assert_outsider_blocked_workers_open()


def test_role_installs_nftables_and_restores_the_normal_value(normal_table):
    """Remove the nftables package (minimal images lack it): the role installs it again."""
    server = node(SERVER)
    server.check_output("dpkg -r nftables")
    assert server.run("test -e /usr/sbin/nft").rc != 0
    assert_outsider_blocked_workers_open()  # the kernel keeps the loaded table
    code, msg, text, seconds = run_play(None)
    print(f"\nnormal value, nftables removed before: rc {code}, {seconds:.1f} s")
    assert code == 0, msg + text[-3000:]
    assert re.search(r"Install the nftables package[^\n]*\n+changed: ", text), text[
        -3000:
    ]
    assert server.run("test -x /usr/sbin/nft").rc == 0
    assert (
        server.run("systemctl is-enabled nftables.service").stdout.strip() != "enabled"
    )
    assert table() == normal_table
    assert_outsider_blocked_workers_open()
    FIGURES["security"].append(
        f"nftables package removed: the role installed it again ({seconds:.0f} s play)"
    )


def test_one_play_reloads_each_changed_table(normal_table):
    """beanstalkd's firewall and the queue guard both use pi_nft_table on the server: run in one
    play, its handler reloads the unit whose file changed, and only that one.

    A stray element (firewall) and a stray rule (guard) are added to the loaded tables; a stale
    line is appended to the table files. A reload loads the file again: the stray item is gone.
    """
    server = node(SERVER)
    guard_normal = table(GUARD_TABLE)
    files = {TABLE: NFT_FILE, GUARD_TABLE: f"/etc/nftables.d/{GUARD_TABLE}.nft"}
    stray = {
        TABLE: f"nft add element inet {TABLE} clients4 '{{ 192.0.2.99 }}'",
        GUARD_TABLE: f"nft add rule inet {GUARD_TABLE} output udp dport 9 counter",
    }

    def spoil(*names: str) -> None:
        for name in (TABLE, GUARD_TABLE):
            server.check_output(stray[name])
        for name in names:
            server.check_output(f"echo '# stale' >>{files[name]}")

    def play() -> tuple[list[str], float]:
        start = time.monotonic()
        out = playbook(BOTH_PLAY, timeout=600)
        text = out.stdout + out.stderr
        assert out.returncode == 0, text[-3000:]
        reloaded = re.findall(r"^changed: \[" + re.escape(SERVER) + r"\] => \(item=([^)]+)\)", text, re.MULTILINE)
        return [u for u in reloaded if u in (UNIT, GUARD_UNIT)], time.monotonic() - start

    try:
        spoil(GUARD_TABLE)  # only the guard's file changes
        only_guard, first = play()
        fw_after, guard_after = table(), table(GUARD_TABLE)
        spoil(TABLE, GUARD_TABLE)  # the firewall keeps its stray element from above: added again is fine
        both, second = play()
        print(f"\none play, guard file stale: reloaded {only_guard} ({first:.0f} s);"
              f" both files stale: reloaded {both} ({second:.0f} s)")
        assert only_guard == [GUARD_UNIT], only_guard
        assert guard_after == guard_normal, guard_after
        assert "192.0.2.99" in fw_after, "the firewall's table was reloaded though its file did not change"
        assert sorted(both) == sorted([UNIT, GUARD_UNIT]), both
        assert table(GUARD_TABLE) == guard_normal
        assert table() == normal_table
    finally:
        server.run(f"nft delete element inet {TABLE} clients4 '{{ 192.0.2.99 }}'")
        for path in files.values():
            server.run(f"sed -i '/^# stale$/d' {path}")
        if table(GUARD_TABLE) != guard_normal:
            server.check_output(f"systemctl reload {GUARD_UNIT}")
    assert_outsider_blocked_workers_open()
    FIGURES["security"].append(
        f"beanstalkd + pi_queue_guard in one play (pi_nft_table twice): guard file changed -> reloaded {only_guard};"
        f" both changed -> reloaded {sorted(both)}"
    )
