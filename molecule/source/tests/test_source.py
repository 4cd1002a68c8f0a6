"""beanstalkd built from source: installed, running with our unit, rebuilt on a version change."""

import os
import subprocess
from pathlib import Path

import pytest

testinfra_hosts = ["ansible://beanstalkd"]
REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(
    not os.environ.get("BEANSTALKD_SOURCE_ARCHIVE"),
    reason="SKIPPED: BEANSTALKD_SOURCE_ARCHIVE is not set (no tarball to build from)",
)


def journal(host, unit):
    return host.run(f"journalctl -u {unit} --no-pager -n 40").stdout


def test_source_build_running(host):
    assert host.check_output("/usr/local/bin/beanstalkd -v").strip() == "beanstalkd 1.13"
    assert host.run("systemctl is-active beanstalkd").stdout.strip() == "active", journal(host, "beanstalkd")
    pid = host.check_output("systemctl show -p MainPID --value beanstalkd")
    cmdline = host.file(f"/proc/{pid}/cmdline").content_string.split("\0")
    assert cmdline[0] == "/usr/local/bin/beanstalkd", cmdline
    assert not host.package("beanstalkd").is_installed


def test_rebuild_on_version_change(host):
    """An installed build of another version is replaced (the upgrade path)."""
    host.check_output(
        "printf '#!/bin/sh\\necho beanstalkd 1.12\\n' > /tmp/fake && chmod 755 /tmp/fake"
        " && mv /tmp/fake /usr/local/bin/beanstalkd"
    )
    assert host.check_output("/usr/local/bin/beanstalkd -v").strip() == "beanstalkd 1.12"
    eph = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"))
    out = subprocess.run(
        ["ansible-playbook", "-i", f"{eph}/inventory", str(Path(__file__).parents[1] / "converge.yml")],
        check=False, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert "Build beanstalkd" in out.stdout and "changed=0" not in out.stdout, out.stdout[-3000:]
    assert host.check_output("/usr/local/bin/beanstalkd -v").strip() == "beanstalkd 1.13"
    assert host.run("systemctl is-active beanstalkd").stdout.strip() == "active", journal(host, "beanstalkd")
