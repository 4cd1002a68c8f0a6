"""Bad input on the deployed lab, one test per kind.

* run_pi.yml with bad values: the play fails on the controller with one line, nothing queued;
  the same for the values of run_matmul.yml (generate_on_workers), run_workload.yml, and role
  variables of the wrong type (argument specs of the entry point `validate`).
* resume of an unknown run id, server unreachable: a clear message, nothing changed.
* raw garbage put on pi.jobs by hand: buried with its reason (pi-job status, status.yml), the
  workers keep serving and a concurrent real run still ends with the undisturbed count.
"""

from __future__ import annotations

import json
import pickle
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import (
    FIGURES,
    SERVER,
    STATE_DIR,
    VENV,
    WORKERS,
    Master,
    journal,
    node,
    playbook,
    record_run,
    run_id,
    server_addr,
    server_py,
    tube_total,
    unit_props,
    wait_active,
    wait_all_workers,
)

testinfra_hosts = [f"ansible://{SERVER}"]

# ----------------------------------------------------------------------------------------------
# run_pi.yml values (kind -> extra vars, expected start of the message)

BAD_VALUES = {
    "darts=abc": ("darts=abc", 'darts: not a count: "abc"'),
    "darts=0": ("darts=0", 'darts: "0" is out of range'),
    "darts=-5": ("darts=-5", 'darts: not a count: "-5"'),
    "darts=1.5": ("darts=1.5", 'darts: not a whole number: "1.5"'),
    "darts=1e30": ("darts=1e30", 'darts: "1e30" is out of range'),
    "darts=(empty)": ("darts=", "darts is required for a new run"),
    "darts=[1] (list)": ('{"darts": [1]}', "darts: not a count"),
    "darts=true (bool)": ('{"darts": true}', 'darts: not a count: "True"'),
    "job_darts=abc": ("darts=1e9 job_darts=abc", 'job_darts: not a count: "abc"'),
    "job_darts=0": ("darts=1e9 job_darts=0", 'job_darts: "0" is out of range'),
    "seed=x": ("darts=1e9 seed=x", 'seed: not an integer: "x"'),
    "seed=-1": ("darts=1e9 seed=-1", "seed: -1 is out of range"),
    "seed={} (dict)": ('{"darts": 1000000000, "seed": {"a": 1}}', "seed: not an integer"),
    "ttr=abc": ("darts=1e9 ttr=abc", 'ttr: not an integer: "abc"'),
    "ttr=0": ("darts=1e9 ttr=0", "ttr: 0 is out of range"),
    "ttr=1.5 (float)": ('{"darts": 1000000000, "ttr": 1.5}', 'ttr: not an integer: "1.5"'),
    "run_id='bad id!'": ("darts=1e9 run_id='bad id!'", 'run_id: invalid run id "bad id!"'),
    "run_id=42 (int)": ('{"darts": 1000000000, "run_id": 42}', 'run_id: invalid run id "42"'),
    "stall_timeout=abc": ("darts=1e9 stall_timeout=abc", 'stall_timeout: not a number of seconds: "abc"'),
    "stall_timeout=-1": ("darts=1e9 stall_timeout=-1", 'stall_timeout: "-1" is out of range'),
}


def journals() -> list[str]:
    return sorted(node(SERVER).run(f"ls {STATE_DIR}").stdout.split())


def failed_msg(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith(("fatal:", "failed:")) and "=> " in line:
            data = json.loads(line.split("=> ", 1)[1])
            return str(data.get("msg", ""))
    return ""


@pytest.fixture(scope="module")
def bad_value_runs():
    """Every bad run_pi.yml value at once (the controller's checks only; no node is touched)."""
    before_total, before_files = tube_total(), journals()
    import os

    old = os.environ.get("ANSIBLE_CALLBACK_RESULT_FORMAT")
    os.environ["ANSIBLE_CALLBACK_RESULT_FORMAT"] = "json"
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = {kind: pool.submit(playbook, "run_pi.yml", "-e", extra, timeout=300)
                       for kind, (extra, _) in BAD_VALUES.items()}
            runs = {kind: f.result() for kind, f in futures.items()}
    finally:
        if old is None:
            os.environ.pop("ANSIBLE_CALLBACK_RESULT_FORMAT", None)
        else:
            os.environ["ANSIBLE_CALLBACK_RESULT_FORMAT"] = old
    return runs, before_total, before_files


@pytest.mark.parametrize("kind", list(BAD_VALUES))
def test_run_pi_bad_value(kind, bad_value_runs):
    runs, before_total, before_files = bad_value_runs
    out = runs[kind]
    msg = failed_msg(out.stdout)
    FIGURES["bad_input"][f"run_pi.yml -e {BAD_VALUES[kind][0]}"] = msg or "(no message)"
    assert out.returncode != 0, out.stdout[-2000:]
    assert msg.startswith(BAD_VALUES[kind][1]) or BAD_VALUES[kind][1] in msg, msg + "\n" + out.stdout[-2000:]
    assert "\n" not in msg
    assert "Run the master" not in out.stdout, "the master play started"
    assert tube_total() == before_total, "something was queued"
    assert journals() == before_files, "a journal was created"


# run_matmul.yml, run_workload.yml and scale.yml values that only they take (kind -> playbook,
# extra vars, expected message): one line on the controller, nothing queued, no journal.
BAD_WORKLOAD_VALUES = {
    "generate_on_workers=maybe": ("run_matmul.yml", ["-e", "n=64", "-e", "generate_on_workers=maybe"],
                                  'generate_on_workers: not a boolean: "maybe" (true or false)'),
    "generate_on_workers=2": ("run_matmul.yml", ["-e", "n=64", "-e", "generate_on_workers=2"],
                              'generate_on_workers: not a boolean: "2"'),
    "generate_on_workers=[1] (list)": ("run_matmul.yml", ["-e", "n=64", "-e", '{"generate_on_workers": [1]}'],
                                       'generate_on_workers: not a boolean: "[1]"'),
    "generate_on_workers with a=/b=": ("run_matmul.yml", ["-e", "a=/tmp/A.npy", "-e", "b=/tmp/B.npy",
                                                          "-e", "generate_on_workers=true"],
                                       "generate_on_workers: the workers make generated operands (n or shape), not files"),
    "generate_on_workers for primes": ("run_workload.yml", ["-e", "workload=primes", "-e", "args='--below 1e7'",
                                                            "-e", "pi_run_generate_on_workers=true"],
                                       "generate_on_workers: for workload matmul or matvec"),
    "run_id=X with n=0": ("run_matmul.yml", ["-e", "run_id=chaos-mm-named", "-e", "n=0"],
                          "argument --size: 0 is out of range"),
}

# Role variables of the wrong type: the argument spec of the entry point `validate` (enforced
# since the playbooks include it as `tasks_from: validate`) stops the play with ansible's message.
BAD_SPEC_VALUES = {
    "pi_run_report=maybe (bool)": ("run_pi.yml", ["-e", "darts=1e9", "-e", "pi_run_report=maybe"], "pi_run_report"),
    "pi_run_workload_args={} (list)": ("run_matmul.yml", ["-e", "n=64", "-e", '{"pi_run_workload_args": {"a": 1}}'],
                                       "pi_run_workload_args"),
    "pi_scale_run_timeout=abc (int)": ("scale.yml", ["-e", "darts=1e9", "-e", "pi_scale_run_timeout=abc"],
                                       "pi_scale_run_timeout"),
}


@pytest.fixture(scope="module")
def bad_workload_runs():
    """Every bad value of the other playbooks at once (controller checks only)."""
    before_total, before_files = tube_total(), journals()
    cases = {**{k: v[:2] for k, v in BAD_WORKLOAD_VALUES.items()}, **{k: v[:2] for k, v in BAD_SPEC_VALUES.items()}}
    with ThreadPoolExecutor(3) as pool:
        futures = {kind: pool.submit(playbook, name, *extra, timeout=300,
                                     env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
                   for kind, (name, extra) in cases.items()}
        runs = {kind: f.result() for kind, f in futures.items()}
    return runs, before_total, before_files


@pytest.mark.parametrize("kind", list(BAD_WORKLOAD_VALUES))
def test_workload_bad_value(kind, bad_workload_runs):
    runs, before_total, before_files = bad_workload_runs
    name, extra, expected = BAD_WORKLOAD_VALUES[kind]
    out = runs[kind]
    msg = failed_msg(out.stdout)
    FIGURES["bad_input"][f"{name} {' '.join(extra)}"] = msg or "(no message)"
    assert out.returncode == 2, out.stdout[-2000:]
    assert msg.startswith(expected), msg + "\n" + out.stdout[-2000:]
    assert "\n" not in msg
    assert "Run the master" not in out.stdout and "Run the matrix product" not in out.stdout, "the master play started"
    assert tube_total() == before_total, "something was queued"
    assert journals() == before_files, "a journal was created"


@pytest.mark.parametrize("kind", list(BAD_SPEC_VALUES))
def test_argument_spec_enforced(kind, bad_workload_runs):
    runs, before_total, before_files = bad_workload_runs
    name, extra, option = BAD_SPEC_VALUES[kind]
    out = runs[kind]
    msg = failed_msg(out.stdout)
    FIGURES["bad_input"][f"{name} {' '.join(extra)}"] = " ".join(msg.split()) or "(no message)"
    assert out.returncode == 2, out.stdout[-2000:]
    assert msg.startswith("Validation of arguments failed") and f"argument '{option}'" in msg, msg
    assert "Validating arguments against arg spec 'validate'" in out.stdout
    assert tube_total() == before_total, "something was queued"
    assert journals() == before_files, "a journal was created"


def test_resume_unknown_run_id():
    before_total, before_files = tube_total(), journals()
    out = playbook("run_pi.yml", "-e", "run_id=chaos-never-ran", "-e", "poll_interval=1")
    text = out.stdout + out.stderr
    match = re.search(r"pi-job run: (unknown run id [^\n]*)", text)
    FIGURES["bad_input"]["run_pi.yml -e run_id=<unknown> (resume)"] = match.group(1) if match else "(none)"
    assert out.returncode != 0, text[-2000:]
    assert match, text[-3000:]
    assert tube_total() == before_total
    assert journals() == before_files


def test_server_unreachable():
    server = node(SERVER)
    # total-jobs restarts from 0 with beanstalkd: compare the jobs the tube holds instead.
    before_held, before_files = tube_total(what="current"), journals()
    server.check_output("systemctl stop beanstalkd.service")
    try:
        out = playbook("run_pi.yml", "-e", "darts=1e9", "-e", "poll_interval=1", "-e", "run_id=chaos-no-server")
        text = out.stdout + out.stderr
        match = re.search(r"pi-job run: (cannot connect to beanstalkd[^\n]*)", text)
        FIGURES["bad_input"]["run_pi.yml with beanstalkd stopped"] = match.group(1) if match else "(none)"
        assert out.returncode != 0, text[-2000:]
        assert match, text[-3000:]
        status = server.run(f"{VENV}/bin/pi-job status --server {server_addr()}")
        assert status.rc == 1 and status.stderr.startswith("pi-job status: cannot query beanstalkd"), status
        FIGURES["bad_input"]["pi-job status with beanstalkd stopped"] = status.stderr.strip()
    finally:
        server.run("systemctl start beanstalkd.service")
        wait_active(server, "beanstalkd.service")
    assert journals() == before_files, "a journal was created"
    assert tube_total(what="current") == before_held, "jobs were queued"


# ----------------------------------------------------------------------------------------------
# raw garbage on pi.jobs

GOOD = {"v": 2, "run": "garbage", "job": 0, "w": "pi", "spec": {"seed": 1, "start": 0, "darts": 1000}}
SPEC = GOOD["spec"]


def body(**changes) -> bytes:
    obj = {**GOOD, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /var/cache/pi-worker/PWNED",))


# Bodies are checked in order: JSON header (size, UTF-8, syntax, version, keys), then the MAC,
# then the fields: well-formed bodies without the cluster key's MAC all end as "bad signature"
# (the field checks behind the MAC are unit-tested on loopback with signed bodies).
GARBAGE = {
    "not JSON": (b"hello, beanstalkd", "not JSON"),
    "JSON array": (b"[1, 2, 3]", "JSON list is not an object"),
    "empty body": (b"", "not JSON"),
    "missing key": (body(spec=...), "missing keys ['spec']"),
    "unknown key": (body(cmd="rm -rf /"), "unknown keys ['cmd']"),
    "old version": (b'{"v":1,"run":"garbage","job":0,"seed":1,"darts":1000}', "unknown version v=1"),
    "darts as string": (body(spec={**SPEC, "darts": "1000"}), "bad signature"),
    "darts negative": (body(spec={**SPEC, "darts": -5}), "bad signature"),
    "darts float": (body(spec={**SPEC, "darts": 1.5}), "bad signature"),
    "job as bool": (body(job=True), "bad signature"),
    "NaN": (b'{"v":2,"run":"garbage","job":0,"w":"pi","spec":{"darts":NaN}}', "non-finite number NaN"),
    "duplicate key": (b'{"v":2,"v":2,"run":"garbage","job":0,"w":"pi","spec":{}}', "duplicate key 'v'"),
    "bad run id": (body(run="../../etc/passwd"), "bad signature"),
    "forged MAC": (body(mac="0" * 64), "bad signature"),
    "binary": (bytes(range(128, 256)), "not UTF-8"),
    "pickle (os.system)": (pickle.dumps(Evil(), protocol=0), "not JSON"),
    "python expression": (b"__import__('os').system('touch /var/cache/pi-worker/PWNED')", "not JSON"),
    "20 kB JSON (< -z, > 4096)": (body(pad="x" * 20000), "no header line in the first 4096 bytes"),
    "deep nesting": (b"[" * 2000 + b"]" * 2000, "nested too deeply"),
}

PUT = """
import base64, json, sys, greenstalk
host, port = sys.argv[1].rsplit(':', 1)
c = greenstalk.Client((host, int(port)), encoding=None, use='pi.jobs')
out = {}
for name, b64 in json.loads(sys.argv[2]).items():
    try:
        out[name] = c.put(base64.b64decode(b64), ttr=30)
    except greenstalk.JobTooBigError as e:
        out[name] = 'JOB_TOO_BIG'
print(json.dumps(out))
"""

OVERSIZE = """
import sys, greenstalk
host, port = sys.argv[1].rsplit(':', 1)
c = greenstalk.Client((host, int(port)), encoding=None, use='pi.jobs')
try:
    print(c.put(b'x' * int(sys.argv[2]), ttr=30))
except greenstalk.JobTooBigError:
    print('JOB_TOO_BIG')
"""
OVERSIZE_BYTES = 17 * 2**20
"""Above the lab's -z (beanstalkd_max_body 16 MiB + 2)."""

STATES = """
import json, sys, greenstalk
host, port = sys.argv[1].rsplit(':', 1)
c = greenstalk.Client((host, int(port)), encoding=None)
out = {}
for i in json.loads(sys.argv[2]):
    try:
        out[i] = c.stats_job(i)['state']
    except greenstalk.NotFoundError:
        out[i] = 'gone'
print(json.dumps(out))
"""

DELETE = """
import json, sys, greenstalk
host, port = sys.argv[1].rsplit(':', 1)
c = greenstalk.Client((host, int(port)), encoding=None)
for i in json.loads(sys.argv[2]):
    try:
        c.delete(i)
    except greenstalk.NotFoundError:
        pass
"""


def put_raw(bodies: dict[str, bytes]) -> dict[str, object]:
    import base64

    arg = json.dumps({k: base64.b64encode(v).decode() for k, v in bodies.items()})
    out = server_py(PUT, server_addr(), arg)
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


def job_states(ids: list[int]) -> dict[str, str]:
    out = server_py(STATES, server_addr(), json.dumps(ids))
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def garbage(baseline):
    """Put all garbage while a real run goes on; wait until it is buried and the run ends."""
    wait_all_workers()
    restarts = {
        (name, i): int(unit_props(node(name), f"pi-worker@{i}.service", "NRestarts")["NRestarts"])
        for name in WORKERS for i in (1, 2)
    }
    master = Master(run_id("garbage"))
    master.start()
    master.wait_progress(3)
    total_before = tube_total()
    oversize = server_py(OVERSIZE, server_addr(), str(OVERSIZE_BYTES)).stdout.strip()
    total_after_oversize = tube_total()
    ids = put_raw({k: v for k, (v, _) in GARBAGE.items()})
    deadline = time.monotonic() + 120
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = job_states(list(ids.values()))
        if all(s == "buried" for s in states.values()):
            break
        time.sleep(0.5)
    rc = master.wait()
    result = master.result() if rc == 0 else None
    record_run("garbage on pi.jobs during the run", len(GARBAGE) + 1, result, baseline)
    status = node(SERVER).run(f"{VENV}/bin/pi-job status --server {server_addr()} --json")
    assert status.rc == 0, status.stderr
    status_json = json.loads(status.stdout)
    status_play = playbook("status.yml")
    data = {
        "ids": ids, "states": states, "rc": rc, "result": result, "master": master,
        "status": status_json, "status_play": status_play, "restarts": restarts,
        "oversize": oversize, "total_before": total_before, "total_after_oversize": total_after_oversize,
    }
    yield data
    server_py(DELETE, server_addr(), json.dumps(list(ids.values())))


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_buried_with_reason(kind, garbage):
    job_id = garbage["ids"][kind]
    expected = GARBAGE[kind][1]
    assert garbage["states"][str(job_id)] == "buried", garbage["states"]
    reasons = {r.get("job_id"): r for r in garbage["status"]["buried"]}
    assert job_id in reasons, garbage["status"]["buried"]
    reason = reasons[job_id]["reason"]
    FIGURES["bad_input"][f"raw job: {kind}"] = f"buried: {reason}"
    assert expected in reason, reason
    play = garbage["status_play"]
    assert play.returncode == 0, play.stdout[-2000:] + play.stderr
    assert f"job {job_id} in pi.jobs: {reason}" in play.stdout or f"job {job_id} " in play.stdout, play.stdout


def test_garbage_oversize_rejected_by_server(garbage):
    FIGURES["bad_input"]["raw job: 17 MiB (> -z, 16 MiB + 2)"] = f"put refused: {garbage['oversize']}"
    assert garbage["oversize"] == "JOB_TOO_BIG"
    assert garbage["total_after_oversize"] == garbage["total_before"], "the over-size job was queued"


def test_garbage_concurrent_run_exact(garbage, baseline):
    assert garbage["rc"] == 0, garbage["master"].tail()
    assert garbage["result"]["inside"] == baseline
    assert garbage["result"]["duplicates"] == 0 or garbage["result"]["inside"] == baseline


def test_garbage_workers_keep_serving(garbage):
    for (name, i), before in garbage["restarts"].items():
        host = node(name)
        unit = f"pi-worker@{i}.service"
        props = unit_props(host, unit, "NRestarts", "ActiveState")
        assert props["ActiveState"] == "active" and int(props["NRestarts"]) == before, props | {
            "journal": journal(host, unit)
        }
    assert garbage["status"]["workers"] == 4, garbage["status"]


def test_garbage_never_executed(garbage):
    for name in WORKERS:
        assert node(name).run("test -e /var/cache/pi-worker/PWNED").rc != 0, f"{name}: pickle/eval ran!"


def test_status_playbook_shows_everything(garbage):
    out = garbage["status_play"].stdout
    print("\n".join(line for line in out.splitlines() if "pi.jobs" in line or "workers" in line)[:3000])
    for needle in ("pi.jobs", "connected workers: 4", "buried jobs with reasons:", "runs in progress:"):
        assert needle in out, out[-3000:]
