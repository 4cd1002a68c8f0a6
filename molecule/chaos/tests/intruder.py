"""An intruder without the cluster key: stdlib only, runs on a lab node (copied there by
test_12_intruders.py). It speaks beanstalkd's protocol itself, the way a student's script would.

    intruder.py HOST PORT capture RUN N FILE   steal (reserve + delete) up to N answers of RUN
    intruder.py HOST PORT attack RUN FILE      forge, replay, delete, bury and kick during RUN

Prints one JSON object: what it did (job ids, counts), never the bodies.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import sys
import time

JOBS = "pi.jobs"


class Queue:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=15)
        self.buf = b""

    def _fill(self, size: int) -> None:
        while len(self.buf) < size:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data

    def _line(self) -> list[str]:
        while b"\r\n" not in self.buf:
            self._fill(len(self.buf) + 1)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode().split()

    def cmd(self, text: str, data: bytes | None = None) -> tuple[list[str], bytes | None]:
        self.sock.sendall(text.encode() + b"\r\n" + (b"" if data is None else data + b"\r\n"))
        words = self._line()
        if words[0] in ("RESERVED", "FOUND", "OK"):
            size = int(words[-1])
            self._fill(size + 2)
            body, self.buf = self.buf[:size], self.buf[size + 2 :]
            return words, body
        return words, None

    def put(self, tube: str, body: bytes, pri: int = 2**16, ttr: int = 60) -> int:
        self.cmd(f"use {tube}")
        words, _ = self.cmd(f"put {pri} 0 {ttr} {len(body)}", body)
        assert words[0] == "INSERTED", words
        return int(words[1])

    def watch_only(self, tube: str) -> None:
        self.cmd(f"watch {tube}")
        self.cmd("ignore default")
        for other in (JOBS, f"pi.results.{RUN}"):
            if other != tube:
                self.cmd(f"ignore {other}")

    def reserve(self, timeout: int) -> tuple[int, bytes] | None:
        words, body = self.cmd(f"reserve-with-timeout {timeout}")
        if words[0] != "RESERVED" or body is None:
            return None
        return int(words[1]), body

    def buried(self, tube: str) -> int:
        words, body = self.cmd(f"stats-tube {tube}")
        if words[0] != "OK" or body is None:
            return 0
        for line in body.decode().splitlines():
            if line.startswith("current-jobs-buried:"):
                return int(line.split(":")[1])
        return 0


def split(body: bytes) -> tuple[dict, bytes]:
    head, _, payload = body.partition(b"\n")
    return json.loads(head), payload


def join(header: dict, payload: bytes) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def capture(q: Queue, count: int, path: str) -> dict:
    """Steal answers of a run as they arrive (the master then has to redo those jobs)."""
    q.watch_only(f"pi.results.{RUN}")
    stolen: list[str] = []
    deadline = time.monotonic() + 60
    while len(stolen) < count and time.monotonic() < deadline:
        got = q.reserve(1)
        if got:
            q.cmd(f"delete {got[0]}")
            stolen.append(base64.b64encode(got[1]).decode())
    with open(path, "w") as out:
        out.write("\n".join(stolen) + "\n")
    return {"stolen_answers": len(stolen)}


def take_real_jobs(q: Queue, count: int, forged: set[int], what: str) -> list[int]:
    """Reserve real jobs of the run (not our forgeries) and delete or bury them."""
    q.watch_only(JOBS)
    done: list[int] = []
    deadline = time.monotonic() + 20
    while len(done) < count and time.monotonic() < deadline:
        got = q.reserve(1)
        if got is None:
            continue
        job_id, body = got
        header, _ = split(body)
        if job_id in forged or header.get("run") != RUN:
            q.cmd(f"release {job_id} 0 1")  # delayed: not reserved again at once
            continue
        q.cmd(f"delete {job_id}" if what == "delete" else f"bury {job_id} 0")
        done.append(job_id)
    return done


def attack(q: Queue, path: str) -> dict:
    report: dict = {}
    # 1. a real job of the run, read without taking it: run id, nonce, spec, MAC
    q.cmd(f"use {JOBS}")
    words, body = q.cmd("peek-ready")
    assert body is not None, words
    job, payload = split(body)
    assert job.get("run") == RUN, "no job of the run is ready"
    # 2. forged jobs: altered after signing, without MAC, with a made-up MAC
    altered = {**job, "spec": {**job["spec"], "darts": job["spec"]["darts"] // 2}}
    no_mac = {k: v for k, v in altered.items() if k != "mac"}
    made_up = {**altered, "mac": secrets.token_hex(32)}
    forged_jobs = [q.put(JOBS, join(h, payload), pri=0, ttr=10) for h in (altered, no_mac, made_up)]
    report["forged_jobs"] = forged_jobs
    # 3. steal answers of the run as they arrive
    q.watch_only(f"pi.results.{RUN}")
    stolen = []
    deadline = time.monotonic() + 20
    while len(stolen) < 3 and time.monotonic() < deadline:
        got = q.reserve(1)
        if got:
            q.cmd(f"delete {got[0]}")
            stolen.append(got[1])
    report["stolen_answers"] = len(stolen)
    # 4. forged answers: right format, wrong count (MAC kept, removed, made up), replays
    forged: list[bytes] = []
    for body in stolen:
        header, extra = split(body)
        header["value"] = {**header["value"], "inside": header["value"]["inside"] + 12345}
        forged.append(join(header, extra))
    if stolen:
        header, extra = split(stolen[0])
        header["value"] = {**header["value"], "inside": header["value"]["darts"]}  # pi = 4
        forged.append(join({k: v for k, v in header.items() if k != "mac"}, extra))
        forged.append(join({**header, "mac": secrets.token_hex(32)}, extra))
    with open(path) as saved:
        captured = [base64.b64decode(line) for line in saved.read().split()]
    forged.extend(captured)  # real answers of another run, replayed unchanged
    if captured:
        header, extra = split(captured[0])
        forged.append(join({**header, "run": RUN}, extra))  # ... and relabelled
    report["forged_answers"] = [q.put(f"pi.results.{RUN}", body) for body in forged]
    report["replayed"] = len(captured)
    # 5. kick the forged jobs once the workers buried them
    deadline = time.monotonic() + 30
    while q.buried(JOBS) < len(forged_jobs) and time.monotonic() < deadline:
        time.sleep(0.2)
    q.cmd(f"use {JOBS}")
    words, _ = q.cmd("kick 100")
    report["kicked"] = int(words[1]) if words[0] == "KICKED" else 0
    # 6. delete and bury real jobs of the run
    report["deleted_jobs"] = take_real_jobs(q, 3, set(forged_jobs), "delete")
    report["buried_jobs"] = take_real_jobs(q, 3, set(forged_jobs), "bury")
    return report


if __name__ == "__main__":
    HOST, PORT, MODE, RUN = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    try:
        queue = Queue(HOST, PORT)
    except OSError as exc:
        print(json.dumps({"connect": f"{type(exc).__name__}: {exc}"}))
        sys.exit(3)
    if MODE == "capture":
        result = capture(queue, int(sys.argv[5]), sys.argv[6])
    else:
        result = attack(queue, sys.argv[5])
    print(json.dumps(result))
