"""The latencies of one load level, as every phase of the benchmark records them, and the
lanes that drive a load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.http import Connection


@dataclass
class Run:
    """Latencies (seconds) of one load level, and its wall time."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    wall: float = 0.0

    @property
    def rate(self) -> float:
        """Operations per second of wall time."""
        return len(self.latencies) / self.wall if self.wall else 0.0

    def figures(self) -> dict[str, float]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

        return {
            "requests": len(ordered),
            "errors": self.errors,
            "throughput_per_s": round(self.rate, 1),
            "p50_ms": round(pct(0.50), 2),
            "p95_ms": round(pct(0.95), 2),
            "p99_ms": round(pct(0.99), 2),
        }


async def drive(concurrency: int, count: int, one: Callable[[int, int], Awaitable[bool]]) -> Run:
    """`count` operations `one(index, lane)`, `concurrency` lanes at a time."""
    run = Run()
    next_index = iter(range(count))

    async def lane(number: int) -> None:
        for i in next_index:
            started = time.perf_counter()
            ok = await one(i, number)
            run.latencies.append(time.perf_counter() - started)
            run.errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(lane(n) for n in range(concurrency)))
    run.wall = time.perf_counter() - started
    return run


async def drive_http(
    base_url: str,
    concurrency: int,
    count: int,
    one: Callable[[Connection, int], Awaitable[bool]],
) -> Run:
    """The same over HTTP: one kept-alive connection per lane (bench/http.py)."""
    connections = [Connection(base_url) for _ in range(concurrency)]
    try:
        return await drive(concurrency, count, lambda i, lane: one(connections[lane], i))
    finally:
        await asyncio.gather(*(c.close() for c in connections))
