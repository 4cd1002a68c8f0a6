"""run_pi.yml brings back its plots next to the result JSON."""

from __future__ import annotations

from pathlib import Path

from conftest import assert_png, playbook


def test_run_pi_brings_back_pngs(inventory_dir, tmp_path):
    out = playbook(inventory_dir, "run_pi.yml", "-e", "darts=2e8", "-e", f"pi_run_results_dir={tmp_path}",
                   "-e", "poll_interval=1")
    print(out.stdout[-2500:])
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr
    [result] = list(tmp_path.glob("*.json"))
    for kind in ("convergence", "hosts"):
        png = Path(tmp_path) / f"{result.stem}.{kind}.png"
        assert png.exists(), sorted(p.name for p in tmp_path.iterdir())
        assert_png(png)
        assert str(png) in out.stdout
