"""Helpers of the scale scenario: run the repository's playbooks against molecule's inventory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def playbook(inventory_dir: str, name: str, *extra: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run REPO/NAME with the repository's ansible.cfg against the scenario's inventory."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env.pop("ANSIBLE_ROLES_PATH", None)
    return subprocess.run(
        ["ansible-playbook", str(REPO / name), "-i", inventory_dir, *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def assert_png(path: Path) -> None:
    """A real PNG picture: the signature, an IHDR chunk with a sane size, and some bytes."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert data[12:16] == b"IHDR" and 200 <= width <= 10000 and 200 <= height <= 10000, (path, width, height)
    assert len(data) > 10_000, f"{path}: only {len(data)} bytes"


@pytest.fixture(scope="session")
def inventory_dir() -> str:
    eph = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    assert eph, "run through molecule (MOLECULE_EPHEMERAL_DIRECTORY unset)"
    return str(Path(eph) / "inventory")
