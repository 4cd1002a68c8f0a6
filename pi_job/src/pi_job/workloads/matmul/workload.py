"""``matmul``: C = A @ B, one job per row panel of A; ``matvec``: the same with one column.

Data moves only through beanstalkd, as binary payloads: a job carries its panel of A, an answer
its panel of C. B, which every job needs, is a shared input of the run: put on the server once
and read by each worker once per run (``peek`` by id, cached). The master writes C into an
``.npy`` file as panels arrive (written at the panel's offset and synced before the answer is
journaled), so it never holds C and the answers in memory, and a resumed run keeps the panels
it has. The panel's integrity is the envelope's: its MAC covers the payload's sha256, so the
answer carries no second digest of it (hashing 4 MiB costs as much as a tenth of its compute
at n=1024), and the run's verification checks C as a whole.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pi_job.core import argtypes
from pi_job.core.envelope import InvalidBodyError, Payload, check_exact_keys, int_field
from pi_job.errors import RunError, UsageError
from pi_job.limits import MAX_JOBS, MAX_SEED
from pi_job.workloads.base import MAX_BODY, Fold, JobContext, Prepared, Workload
from pi_job.workloads.matmul import operands
from pi_job.workloads.matmul.verify import verify_product

PANEL_BYTES: Final = 4 * 2**20
"""Default size of a job's panel of A (and of C): big enough to keep the queue's per-job cost
small against the compute, small enough for many jobs per worker and the server's -z."""
JOBS_PER_WORKER: Final = 4
HEADER_ROOM: Final = 4096
"""Bytes of a body kept for its JSON header."""
_SPEC_KEYS: Final = frozenset({"dtype", "rows", "k", "n"})
_VALUE_KEYS: Final = frozenset({"rows"})


def panels(m: int, rows: int) -> int:
    """Number of row panels of ``rows`` rows for ``m`` rows."""
    return -(-m // rows)


def panel(m: int, rows: int, index: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of panel ``index``."""
    return index * rows, min(m, (index + 1) * rows)


class MatMul(Workload):
    """C = A @ B for float64 or int64 matrices, in row panels."""

    name = "matmul"
    description = "matrix multiplication C = A @ B (float64/int64), row panels, B sent once"
    prefetch = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--size N`` or ``--shape M K N`` (generated), or ``--a A.npy --b B.npy``."""
        dim = argtypes.integer(1, operands.MAX_DIM)
        add = parser.add_argument
        add("--size", type=dim, metavar="N", help="matmul: generated n x n operands")
        add("--shape", type=dim, nargs=3, metavar=("M", "K", "N"), help="matmul: generated shape")
        add("--a", type=Path, metavar="A.npy", help="matmul: left operand file")
        add("--b", type=Path, metavar="B.npy", help="matmul: right operand file")
        add("--dtype", choices=operands.DTYPES, help="matmul: generated dtype (default float64)")
        add("--panel-rows", type=dim, metavar="R", help="matmul: rows of A per job")
        add(
            "--generate-on-workers",
            action="store_const",
            const=True,
            help="matmul: workers make their panels of A and all of B from the seed (the same "
            "product, without sending A and B; generated operands only)",
        )

    def shape_of(self, args: argparse.Namespace) -> tuple[int, int, int]:
        """(m, k, n) of a generated product."""
        if args.shape is not None:
            m, k, n = args.shape
            return int(m), int(k), int(n)
        if args.size is None:
            raise UsageError("matmul needs --size N, --shape M K N, or --a A.npy --b B.npy")
        return args.size, args.size, args.size

    def parameters(
        self, args: argparse.Namespace, workers: int, max_body: int = MAX_BODY
    ) -> dict[str, Any]:
        """Check the operands (files are loaded and checked now); choose the panel size."""
        given = [opt for opt in ("size", "shape") if getattr(args, opt) is not None]
        if (args.a is None) != (args.b is None):
            raise UsageError("--a and --b go together")
        on_workers = bool(getattr(args, "generate_on_workers", None))
        if args.a is not None:
            if on_workers:
                raise UsageError("--generate-on-workers needs --size or --shape, not files")
            if given or args.dtype is not None:
                raise UsageError(
                    "--a/--b take shape and dtype from the files: drop --size/--shape/--dtype"
                )
            a, b = operands.load(args.a, "--a"), operands.load(args.b, "--b")
            operands.check_pair(a, b)
            (m, k), n, dtype = a.shape, b.shape[1], a.dtype.name
            source: dict[str, Any] = {"a": str(args.a.resolve()), "b": str(args.b.resolve())}
        else:
            if len(given) > 1:
                raise UsageError("give --size or --shape, not both")
            m, k, n = self.shape_of(args)
            dtype = args.dtype or "float64"
            source = {"a": None, "b": None}
        n = self.columns(n)
        itemsize = np.dtype(dtype).itemsize
        if (
            k * n * itemsize > operands.MAX_OPERAND_BYTES
            or m * k * itemsize > operands.MAX_OPERAND_BYTES
        ):
            limit = operands.MAX_OPERAND_BYTES
            raise UsageError(f"operands of shape ({m}, {k}) and ({k}, {n}) exceed {limit} bytes")
        room = max_body - HEADER_ROOM
        row_bytes = max(k, n) * itemsize
        if row_bytes > room:
            raise UsageError(
                f"one row of {row_bytes} bytes exceeds the server's largest body ({max_body} bytes)"
            )
        rows = args.panel_rows or self.default_rows(m, k, n, itemsize, workers, room)
        if rows * row_bytes > room:
            raise UsageError(
                f"--panel-rows {rows}: panels of {rows * row_bytes} bytes exceed the server's "
                f"largest body ({max_body} bytes); use at most {room // row_bytes} rows"
            )
        if panels(m, rows) > MAX_JOBS:
            raise UsageError(f"{m} rows in panels of {rows} would need more than {MAX_JOBS} jobs")
        params = {"dtype": dtype, "m": m, "k": k, "n": n, "rows": min(rows, m), **source}
        return {**params, "on_workers": True} if on_workers else params

    def columns(self, n: int) -> int:
        """Columns of B (matvec forces one)."""
        return n

    @staticmethod
    def default_rows(m: int, k: int, n: int, itemsize: int, workers: int, room: int) -> int:
        """Panels of about :data:`PANEL_BYTES` (within ``room``), at least 4 jobs per worker."""
        by_bytes = max(1, min(PANEL_BYTES, room) // (max(k, n) * itemsize))
        by_workers = max(1, -(-m // (JOBS_PER_WORKER * max(1, workers))))
        return min(by_bytes, by_workers, m)

    def check_resume(self, params: dict[str, Any], args: argparse.Namespace) -> list[str]:
        """A resume takes everything from the journal: other operands are a clash.

        The journal's own values given again are not (``pi-run@ID.service`` restarts a killed
        master with the run's first arguments).
        """
        shape = (params["m"], params["k"], params["n"])
        journal: dict[str, Any] = {
            "size": shape,
            "shape": shape,
            "a": params["a"],
            "b": params["b"],
            "dtype": params["dtype"],
            "generate_on_workers": bool(params.get("on_workers")),
        }
        given: dict[str, Any] = {}
        if args.size is not None:
            given["size"] = (args.size, args.size, self.columns(args.size))
        if args.shape is not None:
            given["shape"] = (*map(int, args.shape[:2]), self.columns(int(args.shape[2])))
        for name in ("a", "b"):
            if getattr(args, name) is not None:
                given[name] = str(getattr(args, name).resolve())
        if args.dtype is not None:
            given["dtype"] = args.dtype
        if getattr(args, "generate_on_workers", None) is not None:
            given["generate_on_workers"] = True
        return [
            f"--{opt.replace('_', '-')} (the run's operands are fixed)"
            for opt, value in given.items()
            if value != journal[opt]
        ]

    def operand_paths(self, run_dir: Path) -> tuple[Path, Path]:
        """Where the master keeps A and B of a run."""
        return run_dir / "A.npy", run_dir / "B.npy"

    def prepare(self, params: dict[str, Any], seed: int, run_dir: Path) -> Prepared:
        """Keep A and B in the run directory (generated or copied); B is the shared input."""
        a_path, b_path = self.operand_paths(run_dir)
        if not (a_path.exists() and b_path.exists()):
            shape_a, shape_b = (params["m"], params["k"]), (params["k"], params["n"])
            if params["a"] is None:
                operands.save_generated(b_path, seed, shape_b, params["dtype"], 1)
                operands.save_generated(a_path, seed, shape_a, params["dtype"], 0)
            else:
                a, b = (
                    operands.load(Path(params["a"]), "--a"),
                    operands.load(Path(params["b"]), "--b"),
                )
                operands.save(b_path, b)
                operands.save(a_path, a)
        jobs = panels(params["m"], params["rows"])
        if params.get("on_workers"):
            return Prepared(jobs=jobs, inputs={})  # kept here for the verification only
        b = np.load(b_path, mmap_mode="r", allow_pickle=False)
        return Prepared(jobs=jobs, inputs={"B": b.tobytes()})

    def job(
        self, params: dict[str, Any], seed: int, run_dir: Path, index: int
    ) -> tuple[dict[str, Any], bytes]:
        """Panel ``index`` of A as the payload, read from A.npy with ``pread`` (one copy, from
        the page cache; a copy out of a memory map would fault every page in first)."""
        start, stop = panel(params["m"], params["rows"], index)
        spec = {"dtype": params["dtype"], "rows": [start, stop], "k": params["k"], "n": params["n"]}
        if params.get("on_workers"):
            return {**spec, "seed": seed}, b""
        path = self.operand_paths(run_dir)[0]
        row = params["k"] * np.dtype(params["dtype"]).itemsize
        size = (stop - start) * row
        with path.open("rb", buffering=0) as file:
            fmt = np.lib.format
            header = fmt.read_array_header_1_0 if fmt.read_magic(file) == (1, 0) else None
            _shape, fortran, _dtype = (header or fmt.read_array_header_2_0)(file)
            if fortran:
                raise RunError(f"{path} is not in C order")
            payload = os.pread(file.fileno(), size, file.tell() + start * row)
        if len(payload) != size:
            raise RunError(f"{path} is shorter than its header says")
        return spec, payload

    def compute(
        self, spec: dict[str, Any], payload: Payload, context: JobContext
    ) -> tuple[dict[str, Any], Payload]:
        """One panel of C, with numpy (one BLAS thread per worker instance); the answer's
        payload is the product's own memory (``tobytes`` would copy it)."""
        generated = "seed" in spec
        check_exact_keys(spec, _SPEC_KEYS | {"seed"} if generated else _SPEC_KEYS, "spec")
        if spec["dtype"] not in operands.DTYPES:
            raise InvalidBodyError(f"dtype {spec['dtype']!r} is not one of {operands.DTYPES}")
        dtype = np.dtype(spec["dtype"])
        k = int_field(spec, "k", 1, operands.MAX_DIM)
        n = int_field(spec, "n", 1, operands.MAX_DIM)
        start, stop = _rows(spec["rows"])
        if generated:
            if payload:
                raise InvalidBodyError("a job generated on the worker has no payload")
            seed = int_field(spec, "seed", 0, MAX_SEED)
            a = operands.generate_rows(seed, 0, start, stop, k, dtype.name)
            return {"rows": [start, stop]}, _bytes(a @ self._generated_b(seed, k, n, dtype.name))
        if len(payload) != (stop - start) * k * dtype.itemsize:
            raise InvalidBodyError(
                f"payload of {len(payload)} bytes for a {stop - start} x {k} panel"
            )
        b_bytes = context.input("B")
        if len(b_bytes) != k * n * dtype.itemsize:
            raise InvalidBodyError(f"input B of {len(b_bytes)} bytes is not {k} x {n} {dtype}")
        a = np.frombuffer(payload, dtype=dtype).reshape(stop - start, k)
        b = np.frombuffer(b_bytes, dtype=dtype).reshape(k, n)
        return {"rows": [start, stop]}, _bytes(a @ b)

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def _generated_b(seed: int, k: int, n: int, dtype: str) -> npt.NDArray[Any]:
        """B of a run generated on this worker (made once per run, then kept)."""
        b = operands.generate_rows(seed, 1, 0, k, n, dtype)
        b.flags.writeable = False
        return b

    def check_answer(
        self, params: dict[str, Any], index: int, value: dict[str, Any], payload: Payload
    ) -> None:
        """The planned rows and the right number of bytes."""
        check_exact_keys(value, _VALUE_KEYS, "answer")
        start, stop = panel(params["m"], params["rows"], index)
        if _rows(value["rows"]) != (start, stop):
            raise InvalidBodyError(
                f"job {index} answered rows {value['rows']}, planned {[start, stop]}"
            )
        expected = (stop - start) * params["n"] * np.dtype(params["dtype"]).itemsize
        if len(payload) != expected:
            raise InvalidBodyError(f"answer of {len(payload)} bytes, expected {expected}")

    def fold(self, params: dict[str, Any], seed: int, jobs: int, run_dir: Path) -> Fold:
        """Write panels into ``run_dir/C.npy``."""
        return MatMulFold(self, params, jobs, run_dir)

    def lines(self, summary: dict[str, Any]) -> list[str]:
        """Shape, speed, checksum and verification."""
        check = summary["verification"]
        return [
            f"product        {summary['shape'][0]} x {summary['k']} @ {summary['k']} x "
            f"{summary['shape'][1]} {summary['dtype']} in {summary['jobs']} panels of "
            f"{summary['panel_rows']} rows",
            f"GFLOP/s        {summary['gflops']:.3g}",
            f"bytes moved    {summary['bytes_moved']:,}",
            f"sha256(C)      {summary['sha256']}",
            f"verified       {check['method']}: {'ok' if check['ok'] else 'FAILED'}",
            f"C              {summary['output']}",
        ]

    def progress_units(self, params: dict[str, Any]) -> tuple[str, int]:
        """Rows of C."""
        return ("rows", int(params["m"]))

    def weight(self, value: dict[str, Any]) -> int:
        """Rows of C in an answer."""
        start, stop = value["rows"]
        return int(stop) - int(start)


class MatVec(MatMul):
    """y = A @ x: the bandwidth-bound case (B has one column); uses matmul's options."""

    name = "matvec"
    description = "matrix-vector multiplication y = A @ x (bandwidth-bound: no speed-up)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Shares ``--size``, ``--shape``, ``--a``, ``--b``, ``--dtype``, ``--panel-rows``."""

    def parameters(
        self, args: argparse.Namespace, workers: int, max_body: int = MAX_BODY
    ) -> dict[str, Any]:
        """As matmul; a file B must have one column."""
        params = super().parameters(args, workers)
        if params["b"] is not None and params["n"] != 1:
            raise UsageError(f"matvec: B must have one column, it has {params['n']}")
        return params

    def columns(self, n: int) -> int:
        """One column."""
        return 1


class MatMulFold(Fold):
    """Panels land in C.npy (``pwrite`` at their offset, then ``fdatasync``) before each answer
    is journaled; C is read back through a memory map of the same file (one page cache)."""

    def __init__(self, workload: MatMul, params: dict[str, Any], jobs: int, run_dir: Path) -> None:
        """Open (or create) C.npy."""
        self.workload = workload
        self.params = params
        self.jobs = jobs
        self.run_dir = run_dir
        self.path = run_dir / "C.npy"
        self.dtype = np.dtype(params["dtype"])
        shape = (params["m"], params["n"])
        mode = "r+" if self.path.exists() else "w+"
        self.c: np.memmap[Any, Any] = np.lib.format.open_memmap(
            self.path, mode=mode, dtype=self.dtype, shape=shape
        )
        self.c.flush()  # the header, before panels are written around the map
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        self.row_bytes = params["n"] * self.dtype.itemsize
        self.write_seconds = 0.0
        """Time spent writing and syncing panels (the master's share of a run)."""

    def add(self, job: int, value: dict[str, Any], payload: Payload) -> None:
        """Write the panel at its offset (one copy, into the page cache) and sync it."""
        started = time.perf_counter()
        start, _ = _rows(value["rows"])
        view, at = memoryview(payload), self.c.offset + start * self.row_bytes
        while view:
            written = os.pwrite(self.fd, view, at)
            view, at = view[written:], at + written
        os.fdatasync(self.fd)
        self.write_seconds += time.perf_counter() - started

    def restore(self, job: int, value: dict[str, Any]) -> None:
        """The panel is already in C.npy."""

    def summary(self, seconds: float) -> dict[str, Any]:
        """Shape, dtype, grid, bytes moved, GFLOP/s, sha256 of C."""
        m, k, n = self.params["m"], self.params["k"], self.params["n"]
        item = self.dtype.itemsize
        self.c.flush()
        digest = hashlib.sha256(np.ascontiguousarray(self.c).data).hexdigest()
        flops = 2.0 * m * k * n
        return {
            "shape": [m, n],
            "k": k,
            "dtype": self.dtype.name,
            "panel_rows": self.params["rows"],
            "grid": [self.jobs, 1],
            "bytes_moved": m * n * item
            + (0 if self.params.get("on_workers") else m * k * item + k * n * item),
            "generated_on_workers": bool(self.params.get("on_workers")),
            "gflops": flops / seconds / 1e9 if seconds > 0 else None,
            "sha256": digest,
            "write_seconds": round(self.write_seconds, 3),
            "output": str(self.path),
        }

    def verify(self) -> dict[str, Any]:
        """Exact for int64, Freivalds (and numpy when small) for float64."""
        a_path, b_path = self.workload.operand_paths(self.run_dir)
        a = np.load(a_path, mmap_mode="r", allow_pickle=False)
        b = np.load(b_path, mmap_mode="r", allow_pickle=False)
        return verify_product(a, b, self.c, seed=self.jobs)

    def close(self) -> None:
        """Flush and drop the memory map, close the file."""
        self.c.flush()
        del self.c
        os.close(self.fd)


def _bytes(array: npt.NDArray[Any]) -> memoryview:
    """The bytes of a C-contiguous array, as they are (a flat read-only view, no copy)."""
    return np.ascontiguousarray(array).data.cast("B").toreadonly()


def _rows(value: object) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not 0 <= value[0] < value[1] <= operands.MAX_DIM
    ):
        raise InvalidBodyError("'rows' must be [start, stop] with 0 <= start < stop")
    return int(value[0]), int(value[1])


def as_array(data: bytes, dtype: str, shape: tuple[int, int]) -> npt.NDArray[np.generic]:
    """Bytes of a C-ordered matrix as an array (no copy)."""
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
