"""The latencies of one load level, as every phase of the benchmark records them."""

from __future__ import annotations

from dataclasses import dataclass, field


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
