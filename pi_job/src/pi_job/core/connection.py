"""Connecting to beanstalkd: address parsing, socket timeouts and capped exponential backoff.

greenstalk has neither reconnection nor socket timeouts. :func:`connect` opens the TCP socket
itself (with a connect timeout and an I/O timeout, so a silent peer cannot hang us forever) and
hands it to greenstalk. :class:`Backoff` paces reconnection attempts, and :class:`Connector`
combines both into "give me a live client, waiting as long as it takes or until a deadline".
Connection loss shows up as :class:`OSError` (``ConnectionError``, ``BrokenPipeError``,
``ConnectionResetError``, ``TimeoutError``): see :data:`CONNECTION_ERRORS`.

greenstalk waits for each reply before it sends the next command, so every put, reserve and
delete costs a round trip (and a wake-up of beanstalkd). :func:`reserve_ready`,
:func:`delete_all` and :func:`put_pipelined` pipeline them instead: commands are sent without
waiting, and their replies read in order from the client's own buffered reader (beanstalkd
answers a connection's commands in order). They let one master keep up with a thousand
workers, and keep beanstalkd busy storing one bulk body while the next is on its way.

:class:`Client` is greenstalk's client without its copies of bulk bodies: greenstalk builds a
put as one bytes object (the body formatted into the command, then the CRLF appended: two
copies) and cuts a reserved body out of what it read (a third). On loopback those copies of
fresh megabytes cost more CPU than beanstalkd itself (4 MiB: about 7 ms per put and reserve
against 1 ms; ``pi_job/benchmarks/matmul.py``). It sends a body with ``sendmsg`` (command,
body and CRLF from where they are) and reads it straight into the bytes it returns.

Fresh megabytes are the other cost of bulk bodies: see :mod:`pi_job.core.heap`, which the
``pi-job`` command sets up once per process.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final, TypeVar

import greenstalk

from pi_job.limits import InvalidValueError

CONNECTION_ERRORS: Final = (OSError, greenstalk.UnknownResponseError)
"""Exceptions meaning "the connection is unusable": drop the client and reconnect."""
FIRST_BATCH: Final = 8
"""Reserves sent in the first pipelined batch; each full batch doubles the next one."""

_ClientT = TypeVar("_ClientT", bound=greenstalk.Client[bytes])
CRLF: Final = b"\r\n"
_IOV_MAX: Final = 1024
"""Buffers per ``sendmsg`` (Linux's IOV_MAX)."""

_SERVER_RE: Final = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>[0-9]{1,5})"
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """A beanstalkd TCP address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(text: str) -> ServerAddress:
    """Parse ``HOST:PORT`` or ``[IPv6]:PORT`` (port 1..65535); raise :class:`InvalidValueError`."""
    match = _SERVER_RE.fullmatch(text.strip())
    if not match:
        raise InvalidValueError(f"expected HOST:PORT, got {text!r}")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise InvalidValueError(f"port {port} out of range 1..65535")
    return ServerAddress(match["v6"] or match["host"], port)


def connect(
    address: ServerAddress,
    *,
    use: str = greenstalk.DEFAULT_TUBE,
    watch: str | Iterable[str] = greenstalk.DEFAULT_TUBE,
    connect_timeout: float = 5.0,
    io_timeout: float = 60.0,
) -> Client:
    """Open one connection to beanstalkd with bytes bodies; raise :class:`OSError` on failure.

    ``io_timeout`` bounds every later socket operation, so it must exceed the longest
    ``reserve`` timeout used on the client.
    """
    sock = socket.create_connection((address.host, address.port), timeout=connect_timeout)
    try:
        sock.settimeout(io_timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return Client(sock, encoding=None, use=use, watch=watch)
    except BaseException:
        sock.close()
        raise


class Client(greenstalk.Client[bytes]):
    """greenstalk's client (bytes bodies) that neither copies a body it sends nor one it reads."""

    def put(
        self,
        body: bytes,
        priority: int = greenstalk.DEFAULT_PRIORITY,
        delay: int = greenstalk.DEFAULT_DELAY,
        ttr: int = greenstalk.DEFAULT_TTR,
    ) -> int:
        """As greenstalk's ``put``, for bytes only."""
        return self.put_parts((body,), priority=priority, delay=delay, ttr=ttr)

    def put_parts(
        self,
        parts: Sequence[bytes | memoryview],
        priority: int = greenstalk.DEFAULT_PRIORITY,
        delay: int = greenstalk.DEFAULT_DELAY,
        ttr: int = greenstalk.DEFAULT_TTR,
    ) -> int:
        """Put the concatenation of ``parts`` as one body, without joining them first."""
        size = sum(memoryview(part).nbytes for part in parts)
        head = b"put %d %d %d %d\r\n" % (priority, delay, ttr, size)
        send_all(self._sock, (head, *parts, CRLF))
        (job_id,) = greenstalk._parse_response(self._reader.readline(), b"INSERTED")
        return int(job_id)

    def _read_chunk(self, size: int) -> bytes:
        """A body of ``size`` bytes and its CRLF, read without a copy of the body."""
        return read_body(self._reader, size)

    def peek_into(self, job_id: int, buffer: memoryview) -> int:
        """``peek`` message ``job_id`` and read its body into the start of ``buffer`` (no
        bytes object of its own: a shared input's chunks land where they belong); return its
        size. A body larger than ``buffer`` raises :class:`ValueError` once it has been read
        past (the connection stays usable). ``NotFoundError`` as greenstalk's ``peek``."""
        self._sock.sendall(b"peek %d\r\n" % job_id)
        _, size_text = greenstalk._parse_response(_checked(self._reader.readline()), b"FOUND")
        size = int(size_text)
        if size > buffer.nbytes:
            read_body(self._reader, size)
            raise ValueError(f"message {job_id} has {size} bytes, room for {buffer.nbytes}")
        view, got = buffer[:size], 0
        while got < size:
            count = self._reader.readinto(view[got:])
            if not count:
                raise ConnectionError("torn message body from beanstalkd")
            got += count
        if self._reader.read(2) != CRLF:
            raise ConnectionError("torn message body from beanstalkd")
        return size


def read_body(reader: BinaryIO, size: int) -> bytes:
    """Read a ``size``-byte body and the CRLF after it (a torn one raises ConnectionError)."""
    data = reader.read(size)
    if len(data) != size or reader.read(2) != CRLF:
        raise ConnectionError("torn message body from beanstalkd")
    return data


def send_all(sock: socket.socket, parts: Iterable[bytes | memoryview]) -> None:
    """``sendall`` of several buffers in order, with ``sendmsg`` (no joined copy)."""
    views = [view for view in (memoryview(part).cast("B") for part in parts) if view.nbytes]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        while views and sent >= views[0].nbytes:
            sent -= views.pop(0).nbytes
        if sent:
            views[0] = views[0][sent:]


def reserve_ready(
    client: greenstalk.Client[bytes], limit: int, timeout: int = 0
) -> list[greenstalk.Job[bytes]]:
    """Reserve up to ``limit`` messages: wait up to ``timeout`` s for the first, then take the
    ready ones without waiting, in pipelined batches (8, 16, 32, ...: a trickle costs one
    extra small batch, a full tube a handful of round trips for hundreds of messages).

    Stops at the first batch that is not full (``TIMED_OUT``, or ``DEADLINE_SOON`` when a
    message this connection holds is about to go back to the queue). Any other reply, or a
    torn one, raises a :data:`CONNECTION_ERRORS` exception: the connection must be dropped.
    """
    try:
        messages = [client.reserve(timeout=timeout)] if limit > 0 else []
    except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
        return []
    batch = FIRST_BATCH
    while 0 < len(messages) < limit:
        count = min(batch, limit - len(messages))
        client._sock.sendall(b"reserve-with-timeout 0\r\n" * count)
        reader = client._reader
        full = True
        for _ in range(count):
            status, *values = _reply(reader.readline())
            if status == b"RESERVED" and len(values) == 2:
                data = read_body(reader, int(values[1]))
                messages.append(greenstalk.Job(int(values[0]), data))
            elif status in (b"TIMED_OUT", b"DEADLINE_SOON"):
                full = False
            else:
                raise greenstalk.UnknownResponseError(status, values)
        if not full:
            break
        batch *= 2
    return messages


Buffer = bytes | memoryview
"""Bytes to send as they are (``sendmsg`` takes any contiguous buffer)."""


def put_pipelined(
    client: greenstalk.Client[bytes],
    bodies: Iterable[Buffer | tuple[Buffer, ...]],
    *,
    window: int,
    priority: int = greenstalk.DEFAULT_PRIORITY,
    ttr: int = greenstalk.DEFAULT_TTR,
) -> Iterator[int]:
    """Put each of ``bodies`` on the used tube with up to ``window`` puts awaiting their reply;
    yield the new job ids in order. A body given as a tuple of parts is sent as their
    concatenation, without joining them. A reply other than ``INSERTED`` raises as greenstalk's
    ``put`` does (``JOB_TOO_BIG``, ``DRAINING``, ...); the connection must then be dropped,
    since later replies are still unread.
    """
    reader = client._reader
    waiting = 0
    for body in bodies:
        parts = body if isinstance(body, tuple) else (body,)
        size = sum(memoryview(part).nbytes for part in parts)
        send_all(client._sock, (b"put %d 0 %d %d\r\n" % (priority, ttr, size), *parts, CRLF))
        waiting += 1
        if waiting >= window:
            yield _inserted(reader.readline())
            waiting -= 1
    for _ in range(waiting):
        yield _inserted(reader.readline())


def _inserted(line: bytes) -> int:
    (job_id,) = greenstalk._parse_response(_checked(line), b"INSERTED")
    return int(job_id)


def delete_all(client: greenstalk.Client[bytes], ids: list[int]) -> list[int]:
    """Delete the messages ``ids`` (held by this connection) in one pipelined write; return
    the ids the server did not find. Other replies raise as in :func:`reserve_ready`."""
    if not ids:
        return []
    client._sock.sendall(b"".join(b"delete %d\r\n" % job_id for job_id in ids))
    reader = client._reader
    missing = []
    for job_id in ids:
        status, *values = _reply(reader.readline())
        if status == b"NOT_FOUND":
            missing.append(job_id)
        elif status != b"DELETED":
            raise greenstalk.UnknownResponseError(status, values)
    return missing


def _checked(line: bytes) -> bytes:
    """``line`` if it is a whole reply line (raise ConnectionError on a torn or missing one)."""
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection to beanstalkd closed in a reply")
    return line


def _reply(line: bytes) -> list[bytes]:
    """A reply line split into its words (raise ConnectionError on a torn or missing one)."""
    words = _checked(line).split()
    if not words:
        raise greenstalk.UnknownResponseError(b"", [])
    return words


def empty_tube(client: greenstalk.Client[bytes], tube: str) -> int:
    """Delete every ready, delayed and buried message of ``tube`` (reserved ones are their
    holder's); return how many. Uses ``tube`` and leaves the watch list alone."""
    client.use(tube)
    count = 0
    for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
        while True:
            try:
                message = peek()
            except greenstalk.NotFoundError:
                break
            with contextlib.suppress(greenstalk.NotFoundError):  # taken meanwhile
                client.delete(message)
                count += 1
    return count


def close_quietly(client: greenstalk.Client[bytes] | None) -> None:
    """Close a client, ignoring errors of an already broken connection."""
    if client is None:
        return
    with contextlib.suppress(OSError):
        client.close()


class Backoff:
    """Capped exponential backoff with jitter: ``initial``, ``initial*factor``, ..., ``cap``."""

    def __init__(self, initial: float = 0.1, factor: float = 2.0, cap: float = 5.0) -> None:
        """Create a backoff starting at ``initial`` seconds, growing by ``factor`` up to ``cap``."""
        self.initial = initial
        self.factor = factor
        self.cap = cap
        self._next = initial

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self._next = self.initial

    def next_delay(self) -> float:
        """Return the delay to wait now and grow the next one."""
        delay = self._next
        self._next = min(self.cap, self._next * self.factor)
        return delay * random.uniform(0.8, 1.0)


class ConnectTimeoutError(OSError):
    """No connection could be made before the deadline; wraps the last error."""


class Connector:
    """Makes connections to one server, retrying with backoff and logging state changes only."""

    def __init__(
        self,
        address: ServerAddress,
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        """Prepare to connect to ``address``; ``on_wait`` is told about each waiting period."""
        self.address = address
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._on_wait = on_wait
        self._failing = False

    def retry(
        self,
        attempt: Callable[[], _ClientT],
        *,
        deadline: float | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> _ClientT | None:
        """Call ``attempt`` until it succeeds; return ``None`` if ``should_stop()`` turns true.

        Raises :class:`ConnectTimeoutError` when ``deadline`` (a ``time.monotonic()`` value) passes.
        Logs one line when the server becomes unreachable and one when it is back.
        """
        while not should_stop():
            try:
                client = attempt()
            except CONNECTION_ERRORS as exc:
                reason = _describe(exc)
                if not self._failing:
                    log.warning("cannot reach beanstalkd at %s: %s; retrying", self.address, reason)
                    self._failing = True
                delay = self.backoff.next_delay()
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise ConnectTimeoutError(f"{self.address}: {reason}") from exc
                    delay = min(delay, remaining)
                if self._on_wait is not None:
                    self._on_wait(f"connecting to {self.address}")
                self._sleep(delay)
                continue
            if self._failing:
                log.info("connected to beanstalkd at %s", self.address)
            self._failing = False
            self.backoff.reset()
            return client
        return None

    def lost(self, exc: BaseException) -> None:
        """Record that an established connection broke (logs one line)."""
        if not self._failing:
            log.warning("lost connection to beanstalkd at %s: %s", self.address, _describe(exc))
            self._failing = True


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {text}"
