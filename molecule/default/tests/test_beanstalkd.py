"""The queue server: beanstalkd with a binlog on the cluster address, firewall, sandbox."""

from conftest import (
    assert_active,
    cluster_address,
    exposure,
    journal,
    unit_props,
    wait_active,
)

testinfra_hosts = ["ansible://beanstalkd"]


def test_beanstalkd_active_with_binlog(host):
    assert_active(host, "beanstalkd.service")
    pid = unit_props(host, "beanstalkd.service", "MainPID")["MainPID"]
    cmdline = host.file(f"/proc/{pid}/cmdline").content_string.replace("\0", " ")
    assert "-b /var/lib/beanstalkd" in cmdline, cmdline + journal(host, "beanstalkd.service")
    user = host.check_output(f"stat -c %U /proc/{pid}").strip()
    assert user == "beanstalkd", user


def test_listens_on_cluster_address_only(host):
    address = cluster_address(host)
    assert host.socket(f"tcp://{address}:11300").is_listening, journal(host, "beanstalkd.service")
    assert not host.socket("tcp://0.0.0.0:11300").is_listening


def test_distribution_socket_masked(host):
    assert host.run("systemctl is-enabled beanstalkd.socket").stdout.strip() == "masked"


def test_firewall_table(host):
    assert_active(host, "pi-beanstalkd-firewall.service")
    table = host.check_output("nft list table inet pi_beanstalkd")
    assert "tcp dport 11300" in table and "drop" in table, table
    # Docker's DNS NAT table must still be there (we never flush the rule set).
    assert "DOCKER_OUTPUT" in host.check_output("nft list ruleset"), "docker's nat rules were flushed"


def test_firewall_drops_unlisted_source(host):
    """The controller (docker bridge gateway) is not in the allow-list: its SYN is dropped."""
    import socket

    import pytest

    counter_before = host.check_output("nft list chain inet pi_beanstalkd input | grep drop")
    with pytest.raises(OSError):
        socket.create_connection((cluster_address(host), 11300), timeout=3).close()
    counter_after = host.check_output("nft list chain inet pi_beanstalkd input | grep drop")
    assert counter_after != counter_before, counter_after


def test_beanstalkd_restarts_after_kill(host):
    before = int(unit_props(host, "beanstalkd.service", "NRestarts")["NRestarts"])
    pid = unit_props(host, "beanstalkd.service", "MainPID")["MainPID"]
    host.run(f"kill -9 {pid}")
    import time

    time.sleep(4)
    wait_active(host, "beanstalkd.service")
    after = int(unit_props(host, "beanstalkd.service", "NRestarts")["NRestarts"])
    assert after > before, journal(host, "beanstalkd.service")


def test_beanstalkd_exposure(host):
    assert exposure(host, "beanstalkd.service") <= 2.0
