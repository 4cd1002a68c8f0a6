"""``pi-job run --check --run-id ID``: the values against the journal of an existing run, as a
real start checks them, without connecting, locking or writing (real masters and beanstalkd)."""

from __future__ import annotations

import json
import signal

from conftest import Cluster, expected_inside, wait_for

from pi_job.core import runlock

RUN = ("--run-id", "named", "--darts", "2e6", "--job-darts", "1e6", "--seed", "21")
OTHER = ("--run-id", "named", "--darts", "3e6", "--job-darts", "1e6", "--seed", "22")
REFUSAL = (
    "pi-job run: error: run named exists with other values: --seed 22 (journal has 21); "
    "--darts 3000000 (journal has 2000000)"
)


def check(cluster: Cluster, *args: str) -> tuple[int, list[str], list[str]]:
    """``pi-job run --check`` with the cluster's server and state directory."""
    proc = cluster.run(
        "run", "--check", "--server", cluster.server.address,
        "--state-dir", str(cluster.state_dir), *args, timeout=60,
    )  # fmt: skip
    return proc.returncode, proc.stdout.splitlines(), proc.stderr.splitlines()


def connections(cluster: Cluster) -> int:
    """total-connections of the server (the asking one included: one more each call)."""
    return int(cluster.server.stats()["total-connections"])


def test_check_against_an_existing_run(cluster: Cluster) -> None:
    """Same values: exit 0; other values: the real start's one line, exit 2; live master or
    not, torn last line or not, the journal and the lock are untouched and nothing connects."""
    journal = cluster.state_dir / "named.jsonl"
    master = cluster.master(*RUN, "--stall-timeout", "120")
    wait_for(
        lambda: (
            master.poll() is not None
            or (journal.exists() and journal.read_text().count('"pushed"') == 2)
        )
    )
    assert master.poll() is None, cluster.log_of(master)
    plan = json.loads(journal.read_text().splitlines()[0])
    valid = f"pi-job run: pi values are valid: {json.dumps(plan['params'])}"
    before = connections(cluster)

    # The master is live and holds the run's lock: the check neither waits for nor takes it.
    assert check(cluster, *RUN) == (0, [valid], [])
    assert check(cluster, "--run-id", "named") == (0, [valid], [])  # nothing given, no clash
    assert check(cluster, *OTHER) == (2, [], [REFUSAL])
    assert runlock.holder_pid(cluster.state_dir, "named") == master.pid

    master.send_signal(signal.SIGKILL)
    master.wait(10)
    with journal.open("a") as handle:
        handle.write('{"type":"pushed","t":1')  # a torn last line: a real start would cut it
    data = journal.read_bytes()
    lock = runlock.lock_path(cluster.state_dir, "named")
    lock_data = lock.read_bytes()
    listing = sorted(p.name for p in cluster.state_dir.iterdir())
    assert check(cluster, *RUN) == (0, [valid], [])
    code, out, err = check(cluster, *OTHER)
    print(f"\n--check with other values: exit {code}: {err}")
    assert (code, out, err) == (2, [], [REFUSAL])
    assert journal.read_bytes() == data, "the check changed the journal"
    assert lock.read_bytes() == lock_data and runlock.holder_pid(cluster.state_dir, "named") is None
    assert sorted(p.name for p in cluster.state_dir.iterdir()) == listing
    assert connections(cluster) == before + 1, "the check connected to beanstalkd"

    # The same line as a real start with those values (which queues nothing either).
    real = cluster.run_master(*OTHER, timeout=60)
    assert (real.returncode, real.stderr.splitlines()) == (2, [REFUSAL])

    # The run is intact: the same values resume and finish it.
    cluster.worker()
    resumed = cluster.run_master(*RUN)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["inside"] == expected_inside(21, 2_000_000)


def test_check_with_a_new_run_id_is_unchanged(cluster: Cluster) -> None:
    """No journal of the id: the values of a new run are checked as before; nothing is made."""
    before = connections(cluster)
    plain = check(cluster, "--darts", "2e6", "--job-darts", "1e6")
    assert plain[0] == 0 and plain[1][0].startswith("pi-job run: pi values are valid: "), plain
    assert check(cluster, "--run-id", "fresh", "--darts", "2e6", "--job-darts", "1e6") == plain
    code, out, err = check(cluster, "--run-id", "fresh")
    assert (code, out, err) == (2, [], ["pi-job run: error: --darts is required for a new pi run"])
    assert not cluster.state_dir.exists()
    assert connections(cluster) == before + 1 and cluster.server.stats()["total-jobs"] == 0
