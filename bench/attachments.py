"""The benchmark's attachments phase (issue 26): a file through HTTP against PostgreSQL's
own COPY of the same bytes, and the API's memory while files arrive.

`python -m bench --only attachments [--quick]`, not in a full run. On the stack every
phase uses (one API process, one worker, PostgreSQL, Redis database 11), a random file of
`FILE_BYTES` (25 MB) is

- uploaded through HTTP as an SDK does it: PreCreateAttachments, then each 2 MiB chunk
  (`worker.domain.attachments.CHUNK_BYTES`) posted as multipart/form-data one after the
  other, on one kept-alive connection per file; at c=1 (one file) and c=8 (eight files at
  once, each on a draft of its own, of eight different senders);
- downloaded through HTTP (`GET /api/v1/attachments/{guid}`) by its sender, from its
  complete draft, at c=1 and c=8 (the files just uploaded);

and, as the baseline on the same PostgreSQL, the same bytes in the same 2 MiB pieces are
written with `COPY bench_blob (file, n, data) FROM STDIN (FORMAT BINARY)`, one COPY and
one commit per file, into a scratch table of the bench database (dropped afterwards), and
read back with `COPY (SELECT data ...) TO STDOUT (FORMAT BINARY)`, at c=1 and c=8 (eight
connections, a thread each). Binary COPY is the cheapest way in and out of PostgreSQL for
a client: no escaping, one statement per file.

A figure is MB/s, file bytes (10^6) over the wall time from the first request until the
last file is done. Each measurement runs `ATTACHMENT_ROUNDS` times (one with --quick), each HTTP
round followed by its COPY round at the same concurrency, so that the machine's drift
hits both sides alike; medians, the spread (min-max) and each round's ratio are printed.
Before every measurement the stack is let settle and PostgreSQL is asked for a
CHECKPOINT: the ~200 MB one measurement writes otherwise lands in the checkpoint of
whichever measurement comes next.

The API's memory: the resident set (VmRSS, summed over the API process and any children,
from /proc) sampled every `RSS_SAMPLE_SECONDS` before, during and after eight concurrent
uploads of a 25 MB file (a measurement of its own, before the rounds), and its peak
(VmHWM) at the end. A chunk per request held in memory grows it by a few chunks per
concurrent request; a file held in memory would grow it by the files' 200 MB.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.http import Connection
from bench.procs import status_kb
from bench.seed import Seed
from tests.support import Stack
from worker.domain.attachments import CHUNK_BYTES, chunk_plan

FILE_BYTES = 25_000_000
MB = 1_000_000
LEVELS = (1, 8)
ATTACHMENT_ROUNDS = 5
ATTACHMENT_ROUNDS_QUICK = 1
RSS_FILES = 8
RSS_SAMPLE_SECONDS = 0.02
BOUNDARY = "----securesend-bench-boundary"
SCRATCH_TABLE = "bench_blob"


def attachment_drafts_needed(rounds: int) -> int:
    """Drafts the phase uploads to: a warm-up file, the memory measurement's files and
    every round's, one file per draft."""
    return 1 + RSS_FILES + rounds * sum(LEVELS)


def _multipart(data: bytes) -> bytes:
    """A chunk as the SDKs post it: a file part named `upload`."""
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="upload"; filename="blob"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


@dataclass(frozen=True)
class Payload:
    """The file, cut as the server cuts it, and each cut already in its multipart body
    (built once: the load generator shares the two cores with what it measures)."""

    pieces: list[bytes]
    bodies: list[bytes]

    @classmethod
    def random(cls, size: int) -> Payload:
        data = os.urandom(size)
        pieces = [data[c.start : c.end] for c in chunk_plan(size, CHUNK_BYTES)]
        return cls(pieces=pieces, bodies=[_multipart(p) for p in pieces])

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.pieces)


@dataclass(frozen=True)
class Uploaded:
    token: str
    attachment_guid: str


class TransferError(RuntimeError):
    """A request of the phase was not answered as it should have been."""


async def _upload_one(
    connection: Connection, token: str, message_guid: str, payload: Payload
) -> Uploaded:
    """PreCreateAttachments for one file on the draft, then every chunk in turn."""
    headers = {"x-sm-session-token": token}
    answer = await connection.request(
        "POST",
        "/api/v1/attachments/precreate",
        headers=headers,
        json_body={
            "messageGuid": message_guid,
            "attachmentPlaceholders": [{"fileName": "bench.bin", "totalBytesLength": payload.size}],
        },
    )
    if answer.status != 200:
        raise TransferError(f"precreate answered {answer.status}: {answer.body[:300]!r}")
    (placeholder,) = answer.json()["attachmentPlaceholders"]
    guid = placeholder["attachmentGuid"]
    chunks = placeholder["chunks"]
    if [c["bytesSize"] for c in chunks] != [len(p) for p in payload.pieces]:
        raise TransferError(f"the server cut the file otherwise: {chunks}")
    chunk_headers = {**headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    for chunk, body in zip(chunks, payload.bodies, strict=True):
        answer = await connection.request(
            "POST",
            f"/api/v1/attachments/{guid}/chunk/{chunk['chunkNumber']}",
            headers=chunk_headers,
            content=body,
        )
        if answer.status != 200:
            raise TransferError(f"chunk answered {answer.status}: {answer.body[:300]!r}")
    return Uploaded(token=token, attachment_guid=guid)


async def _upload(
    base_url: str, drafts: list[tuple[str, str]], payload: Payload
) -> tuple[float, list[Uploaded]]:
    """One file per draft, all at once, each on a connection of its own; the wall time."""
    connections = [Connection(base_url) for _ in drafts]
    try:
        started = time.perf_counter()
        uploaded = await asyncio.gather(
            *(
                _upload_one(connection, token, guid, payload)
                for connection, (token, guid) in zip(connections, drafts, strict=True)
            )
        )
        return time.perf_counter() - started, list(uploaded)
    finally:
        await asyncio.gather(*(c.close() for c in connections))


async def _download(base_url: str, files: list[Uploaded], size: int) -> float:
    """Every file by its sender, all at once, each on a connection of its own, the bytes
    dropped as they arrive; the wall time."""
    connections = [Connection(base_url) for _ in files]

    async def one(connection: Connection, file: Uploaded) -> None:
        answer = await connection.request(
            "GET",
            f"/api/v1/attachments/{file.attachment_guid}",
            headers={"x-sm-session-token": file.token},
            keep_body=False,
        )
        if answer.status != 200 or answer.size != size:
            raise TransferError(f"download answered {answer.status} with {answer.size} bytes")

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(c, f) for c, f in zip(connections, files, strict=True)))
        return time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in connections))


async def _check_round_trip(base_url: str, file: Uploaded, payload: Payload) -> None:
    """The warm-up file comes back byte for byte (the measured downloads count bytes)."""
    connection = Connection(base_url)
    try:
        answer = await connection.request(
            "GET",
            f"/api/v1/attachments/{file.attachment_guid}",
            headers={"x-sm-session-token": file.token},
        )
    finally:
        await connection.close()
    if answer.status != 200 or answer.body != b"".join(payload.pieces):
        raise TransferError(f"the warm-up file came back otherwise ({answer.status})")


class CopyBaseline:
    """The same bytes through PostgreSQL's binary COPY, on connections of its own to the
    stack's database, into and out of a scratch table it drops when closed."""

    def __init__(self, database_url: str, connections: int) -> None:
        url = database_url.replace("postgresql+psycopg://", "postgresql://")
        self._connections = [psycopg.connect(url) for _ in range(connections)]
        first = self._connections[0]
        first.execute(
            f"CREATE TABLE {SCRATCH_TABLE} (file integer, n integer, data bytea, "
            "PRIMARY KEY (file, n))"
        )
        first.commit()
        self._pool = ThreadPoolExecutor(max_workers=connections)
        self._next_file = 0

    def close(self) -> None:
        self._pool.shutdown()
        first = self._connections[0]
        first.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        first.commit()
        for connection in self._connections:
            connection.close()

    def checkpoint(self) -> None:
        connection = self._connections[0]
        connection.execute("CHECKPOINT")
        connection.commit()

    def write(self, files: int, payload: Payload) -> tuple[float, list[int]]:
        """`files` files at once, each one COPY and one commit on a connection of its
        own; the wall time and the files' numbers."""
        numbers = list(range(self._next_file, self._next_file + files))
        self._next_file += files

        def one(connection: psycopg.Connection[Any], number: int) -> None:
            with (
                connection.cursor() as cursor,
                cursor.copy(
                    f"COPY {SCRATCH_TABLE} (file, n, data) FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["int4", "int4", "bytea"])
                for n, piece in enumerate(payload.pieces, start=1):
                    copy.write_row((number, n, piece))
            connection.commit()

        return self._timed(one, numbers), numbers

    def read(self, numbers: list[int], size: int) -> float:
        """These files at once, each read back with one COPY on a connection of its own;
        the wall time."""

        def one(connection: psycopg.Connection[Any], number: int) -> None:
            received = 0
            with (
                connection.cursor() as cursor,
                cursor.copy(
                    f"COPY (SELECT data FROM {SCRATCH_TABLE} WHERE file = {int(number)} "
                    "ORDER BY n) TO STDOUT (FORMAT BINARY)"
                ) as copy,
            ):
                for block in copy:
                    received += len(block)
            connection.commit()
            if received < size:  # the binary format adds a few bytes a row
                raise TransferError(f"COPY TO read {received} bytes of {size}")

        return self._timed(one, numbers)

    def _timed(
        self, one: Callable[[psycopg.Connection[Any], int], None], numbers: list[int]
    ) -> float:
        started = time.perf_counter()
        futures = [
            self._pool.submit(one, connection, number)
            for connection, number in zip(self._connections, numbers, strict=False)
        ]
        for future in futures:
            future.result()
        return time.perf_counter() - started


def _status_mb(pid: int, key: str) -> float:
    """`key` (VmRSS, VmHWM) of a process and its descendants, in MB (10^6 bytes)."""
    return round(status_kb(pid, key) * 1024 / MB, 1)


@dataclass
class RssSamples:
    """VmRSS samples of the API while something ran."""

    values: list[float] = field(default_factory=list)

    @property
    def peak(self) -> float:
        return max(self.values, default=0.0)


@contextmanager
def sampling_rss(pid: int) -> Iterator[RssSamples]:
    """Sample the API's VmRSS every `RSS_SAMPLE_SECONDS` in a thread while the block runs."""
    samples = RssSamples()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.values.append(_status_mb(pid, "VmRSS"))
            done.wait(RSS_SAMPLE_SECONDS)

    thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()
        samples.values.append(_status_mb(pid, "VmRSS"))


def _mb_per_s(files: int, size: int, seconds: float) -> float:
    return round(files * size / MB / seconds, 1)


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3 if max(values) < 10 else 1),
        "min": min(values),
        "max": max(values),
        "rounds": values,
    }


def measure_attachments(
    stack: Stack, data: Seed, *, rounds: int, settle: Callable[[], None]
) -> dict[str, Any]:
    """The whole phase (module docstring) on a running stack with seeded drafts; its
    figures. Uploads `attachment_drafts_needed(rounds)` files to drafts of `data`,
    creates and drops the scratch table. Raises TransferError on a wrong answer."""
    started = time.perf_counter()
    base_url = stack.url("")
    api_pid = stack.processes["api"].pid
    payload = Payload.random(FILE_BYTES)
    size = payload.size
    copy = CopyBaseline(stack.config.database_url, max(LEVELS))

    def quiet() -> None:
        settle()
        copy.checkpoint()

    try:
        # Warm-up: the first upload and download of a fresh process, checked byte for byte.
        _, (warm,) = asyncio.run(_upload(base_url, data.take(1), payload))
        asyncio.run(_check_round_trip(base_url, warm, payload))
        copy.read(copy.write(1, payload)[1], size)

        quiet()
        rss_before = _status_mb(api_pid, "VmRSS")
        with sampling_rss(api_pid) as during:
            rss_wall, _ = asyncio.run(_upload(base_url, data.take(RSS_FILES), payload))
        quiet()
        rss_after = _status_mb(api_pid, "VmRSS")
        memory: dict[str, Any] = {
            "files": RSS_FILES,
            "file_mb": size / MB,
            "before_mb": rss_before,
            "peak_during_mb": during.peak,
            "after_mb": rss_after,
            "growth_mb": round(during.peak - rss_before, 1),
            "samples": len(during.values),
            "upload_mb_per_s": _mb_per_s(RSS_FILES, size, rss_wall),
        }

        walls: dict[str, list[float]] = {
            f"{kind}_{side}_c{level}": []
            for kind in ("upload", "download")
            for side in ("http", "copy")
            for level in LEVELS
        }
        download_peaks: list[float] = []
        for _ in range(rounds):
            uploaded: dict[int, list[Uploaded]] = {}
            copied: dict[int, list[int]] = {}
            for level in LEVELS:
                quiet()
                wall, uploaded[level] = asyncio.run(_upload(base_url, data.take(level), payload))
                walls[f"upload_http_c{level}"].append(wall)
                quiet()
                wall, copied[level] = copy.write(level, payload)
                walls[f"upload_copy_c{level}"].append(wall)
            for level in LEVELS:
                quiet()
                with sampling_rss(api_pid) as during:
                    wall = asyncio.run(_download(base_url, uploaded[level], size))
                download_peaks.append(during.peak)
                walls[f"download_http_c{level}"].append(wall)
                quiet()
                walls[f"download_copy_c{level}"].append(copy.read(copied[level], size))
        memory["peak_during_downloads_mb"] = max(download_peaks)
        memory["hwm_end_mb"] = _status_mb(api_pid, "VmHWM")
    finally:
        copy.close()

    figures: dict[str, Any] = {}
    for kind in ("upload", "download"):
        for level in LEVELS:
            http = [_mb_per_s(level, size, w) for w in walls[f"{kind}_http_c{level}"]]
            base = [_mb_per_s(level, size, w) for w in walls[f"{kind}_copy_c{level}"]]
            ratios = [round(h / b, 3) for h, b in zip(http, base, strict=True)]
            figures[f"{kind}_c{level}"] = {
                "http_mb_per_s": _spread(http),
                "copy_mb_per_s": _spread(base),
                "ratio": _spread(ratios),
            }
    return {
        "file_bytes": size,
        "chunk_bytes": CHUNK_BYTES,
        "chunks_per_file": len(payload.pieces),
        "rounds": rounds,
        "figures": figures,
        "rss": memory,
        "seconds": round(time.perf_counter() - started, 1),
    }


def print_attachments(a: dict[str, Any]) -> None:
    """The phase's table: HTTP against COPY per direction and concurrency, then memory."""
    print(
        f"\nattachments: a {a['file_bytes'] / MB:g} MB file in {a['chunks_per_file']} chunks "
        f"through HTTP vs. PostgreSQL's binary COPY of the same bytes, MB/s, "
        f"median (min-max) of {a['rounds']} round(s)"
    )
    print(f"{'':<12} | {'HTTP':>22} | {'COPY':>22} | {'ratio':>22}")
    for name, f in a["figures"].items():
        cells = [
            f"{s['median']} ({s['min']}-{s['max']})"
            for s in (f["http_mb_per_s"], f["copy_mb_per_s"], f["ratio"])
        ]
        print(f"{name:<12} | " + " | ".join(f"{c:>22}" for c in cells))
    print(
        "  ratio by round: "
        + "; ".join(f"{n} {f['ratio']['rounds']}" for n, f in a["figures"].items())
    )
    m = a["rss"]
    print(
        f"API RSS around {m['files']} concurrent {m['file_mb']:g} MB uploads: before "
        f"{m['before_mb']} MB, peak during {m['peak_during_mb']} MB (growth {m['growth_mb']} "
        f"MB, {m['samples']} samples), after {m['after_mb']} MB; peak during c=8 downloads "
        f"{m['peak_during_downloads_mb']} MB; VmHWM at the end {m['hwm_end_mb']} MB"
    )
    print(f"the phase took {a['seconds']} s (stack start and seeding not counted)")
