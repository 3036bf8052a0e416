"""The benchmark's results as one PNG, for people who would rather look than read a table.

    .venv/bin/python -m bench.plot bench/results/latest.json   # writes latest.png beside it

`python -m bench` calls `write_plot` itself. Each panel is drawn from what the results
hold: send against the no-op HTTP round trip per concurrency level (latency p50/p95 and
throughput), and for the mixed phase (bench/lanes.py) the interactive sends' answer
latency and notification arrival idle against mixed, each send over time, and the bulk
rate alone against mixed; for the pace phase (bench/pace.py) the emails delivered over
time and in each second, per configuration, against the relay's rate. Drawn with the Agg
backend: no display needed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: a file, never a window

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

SEND, NOOP = "tab:blue", "tab:orange"
IDLE, MIXED = "tab:green", "tab:red"
TARGET = "dimgray"
# A panel whose bars span more than this factor is drawn on a log scale: an interactive
# send stuck behind a bulk backlog can take a thousand times as long as an idle one.
LOG_SPAN = 10.0

Panel = Callable[[Axes, dict[str, Any]], None]


def _levels(results: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The concurrency levels in order (their keys are strings once read from JSON)."""
    return sorted((int(level), f) for level, f in results["levels"].items())


def _latency_by_level(ax: Axes, results: dict[str, Any]) -> None:
    levels = _levels(results)
    xs = [str(level) for level, _ in levels]
    for kind, label, color in (("send", "SendMessage", SEND), ("noop_http", "no-op HTTP", NOOP)):
        for pct, style in (("p50_ms", "-"), ("p95_ms", "--")):
            ax.plot(
                xs,
                [f[kind][pct] for _, f in levels],
                style,
                marker="o",
                color=color,
                label=f"{label} {pct.removesuffix('_ms')}",
            )
    _ms_axis(ax, log=True)
    ax.set_title("Latency per concurrency level\nSendMessage (notification off) vs no-op")
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("latency (log scale)")
    ax.legend(fontsize="small")
    ax.grid(True, which="both", axis="y", alpha=0.3)


def _throughput_by_level(ax: Axes, results: dict[str, Any]) -> None:
    levels = _levels(results)
    positions = range(len(levels))
    width = 0.38
    sends = [f["send"]["throughput_per_s"] for _, f in levels]
    noops = [f["noop_http"]["throughput_per_s"] for _, f in levels]
    ax.bar([p - width / 2 for p in positions], sends, width, color=SEND, label="SendMessage")
    ax.bar([p + width / 2 for p in positions], noops, width, color=NOOP, label="no-op HTTP")
    for p, send, noop in zip(positions, sends, noops, strict=True):
        if noop:
            ax.annotate(
                f"×{send / noop:.2f}",
                (p, max(send, noop)),
                textcoords="offset points",
                xytext=(0, 4),
                ha="center",
                fontsize="small",
            )
    ax.set_xticks(list(positions), [str(level) for level, _ in levels])
    ax.set_title("Throughput per concurrency level\n(×: send / no-op)")
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("requests per second")
    ax.margins(y=0.15)
    ax.legend(fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)


def _idle_vs_mixed(
    ax: Axes,
    lanes: dict[str, Any],
    *,
    keys: list[tuple[str, str]],
    targets: dict[str, float],
    title: str,
    ylabel: str,
) -> None:
    """Grouped bars of `keys` ((label, field)), idle beside mixed, with a target mark
    over the statistic it applies to."""
    idle, mixed = lanes["interactive_idle"], lanes["mixed"]["interactive"]
    width = 0.38
    values: list[float] = []
    for offset, figures, label, color in (
        (-width / 2, idle, "idle", IDLE),
        (width / 2, mixed, "behind bulk (mixed)", MIXED),
    ):
        heights = [float(figures[field] or 0.0) for _, field in keys]
        values += heights
        bars = ax.bar(
            [i + offset for i in range(len(keys))], heights, width, color=color, label=label
        )
        ax.bar_label(bars, labels=[_short_ms(h) for h in heights], fontsize="x-small", padding=2)
    for i, (_, field) in enumerate(keys):
        if field in targets:
            # Over the bars (zorder), labelled above the line: a bar may reach past it.
            ax.hlines(
                targets[field],
                i - 0.45,
                i + 0.45,
                colors=TARGET,
                linestyles="--",
                linewidth=1.5,
                zorder=3,
                # one legend entry for all (matplotlib leaves out labels starting "_")
                label="target" if not any(f in targets for _, f in keys[:i]) else "_target",
            )
            ax.annotate(
                f"≤ {_short_ms(targets[field])}",
                (i - 0.45, targets[field]),
                textcoords="offset points",
                xytext=(0, 3),
                ha="left",
                fontsize="x-small",
                color=TARGET,
                zorder=4,
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none"},
            )
    positive = [v for v in values + list(targets.values()) if v > 0]
    log = bool(positive) and max(positive) / min(positive) > LOG_SPAN
    _ms_axis(ax, log=log)
    if log:
        ylabel += " (log scale)"
    ax.set_xticks(range(len(keys)), [label for label, _ in keys])
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.2)
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)


def _short_ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _tick_ms(ms: float, _position: object = None) -> str:
    """A milliseconds axis's tick: in seconds from one second up, the shortest way."""
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"


_MS = FuncFormatter(_tick_ms)


def _ms_axis(ax: Axes, *, log: bool) -> None:
    """A y axis in milliseconds, labelled in ms or s; on a log scale ticks at 1, 2 and 5
    of each decade (a range within one decade still gets labels)."""
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(_MS)


def _interactive_latency(ax: Axes, results: dict[str, Any]) -> None:
    lanes = results["lanes"]
    mixed = lanes["mixed"]["interactive"]
    _idle_vs_mixed(
        ax,
        lanes,
        keys=[("p50", "p50_ms"), ("p95", "p95_ms"), ("max", "max_ms")],
        targets={"p95_ms": 1000.0, "max_ms": 2000.0},
        title=(
            f"Interactive SendMessage: answer latency\n{lanes['interactive_sends']} sends, "
            f"statuses idle {_statuses(lanes['interactive_idle'])}, mixed {_statuses(mixed)}"
        ),
        ylabel="time until the answer",
    )


def _statuses(figures: dict[str, Any]) -> str:
    return ", ".join(f"{status}×{n}" for status, n in figures["statuses"].items())


def _email_arrival(ax: Axes, results: dict[str, Any]) -> None:
    lanes = results["lanes"]
    _idle_vs_mixed(
        ax,
        lanes,
        keys=[("p50", "email_p50_ms"), ("p95", "email_p95_ms"), ("max", "email_max_ms")],
        targets={"email_p95_ms": 5000.0},
        title="Interactive sends' notification email\narrival at the SMTP server",
        ylabel="time from the request to the email",
    )


def _bulk_way(lanes: dict[str, Any]) -> str:
    """How the bulk batches arrived (bench/lanes.py, `via`)."""
    if lanes.get("bulk_via", "direct") == "async":
        return "sent with Prefer: respond-async"
    return "enqueued directly"


def _bulk_rate(ax: Axes, results: dict[str, Any]) -> None:
    lanes = results["lanes"]
    alone, mixed = lanes["bulk_alone"], lanes["mixed"]["bulk"]
    width = 0.38
    keys = [("sends/s", "sends_per_s"), ("emails/s", "emails_per_s")]
    for offset, figures, label, color in (
        (-width / 2, alone, "bulk alone", IDLE),
        (width / 2, mixed, "with interactive sends (mixed)", MIXED),
    ):
        heights = [float(figures[field]) for _, field in keys]
        bars = ax.bar(
            [i + offset for i in range(len(keys))], heights, width, color=color, label=label
        )
        ax.bar_label(bars, labels=[f"{h:.1f}" for h in heights], fontsize="x-small", padding=2)
    ratio = lanes["ratios"]["bulk_sends_per_s_mixed_over_alone"]
    ax.set_xticks(range(len(keys)), [label for label, _ in keys])
    ax.set_title(
        f"Bulk sends {_bulk_way(lanes)} ({lanes['bulk_sends']} per batch)\n"
        f"sends/s mixed / alone = {ratio} (target ≥ 0.9)"
    )
    ax.set_ylabel("per second, first publish to last job and email")
    ax.margins(y=0.25)
    ax.legend(fontsize="small", loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)


def _interactive_timeline(ax: Axes, results: dict[str, Any]) -> None:
    lanes = results["lanes"]
    backlog = lanes["mixed"]["interactive"].get("backlog_until_offset_s")
    if backlog is not None:
        # From the bulk batch's publish until its last job and email: the sends to its
        # right met an idle stack. Cut to the sends' span, which a long backlog outlasts.
        last = max(s["offset_s"] for s in lanes["mixed"]["interactive"]["sends"]) + 0.5
        ax.axvspan(
            max(-0.5, -lanes["mixed"]["bulk"]["publish_s"]),
            min(backlog, last),
            color=MIXED,
            alpha=0.08,
            label=f"mixed: bulk backlog (until {backlog:.1f} s)",
        )
    for figures, label, color in (
        (lanes["interactive_idle"], "idle", IDLE),
        (lanes["mixed"]["interactive"], "mixed", MIXED),
    ):
        sends = figures["sends"]
        ax.plot(
            [s["offset_s"] for s in sends],
            [s["latency_ms"] for s in sends],
            "o-",
            color=color,
            label=f"{label}: answer",
        )
        emailed = [s for s in sends if s["email_ms"] is not None]
        ax.plot(
            [s["offset_s"] for s in emailed],
            [s["email_ms"] for s in emailed],
            "s--",
            color=color,
            markerfacecolor="none",
            label=f"{label}: email arrived",
        )
        failed = [s for s in sends if s["status"] != 200]
        if failed:
            ax.plot(
                [s["offset_s"] for s in failed],
                [s["latency_ms"] for s in failed],
                "x",
                color="black",
                markersize=9,
                label=f"{label}: not 200",
            )
    _ms_axis(ax, log=True)
    ax.set_title(
        "Each interactive send\n(started one every "
        f"{lanes['interactive_interval_s']} s; mixed: right after the bulk publish)"
    )
    ax.set_xlabel("request started (s after the first)")
    ax.set_ylabel("time after the request (log scale)")
    # Below the axes: inside, it would hide sends.
    ax.legend(fontsize="x-small", ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    ax.grid(True, which="both", axis="y", alpha=0.3)


def _pace_delivered(ax: Axes, results: dict[str, Any]) -> None:
    pace = results["pace"]
    rate = pace["relay_rate"]
    longest = 0
    for c in pace["configurations"]:
        per_second = c["emails_per_second"]
        longest = max(longest, len(per_second))
        delivered, total = [0], 0
        for count in per_second:
            total += count
            delivered.append(total)
        ax.plot(range(len(delivered)), delivered, label=f"{c['configuration']}")
    ideal = pace["sends"] / rate
    ax.plot([0, ideal], [0, pace["sends"]], "--", color=TARGET, label=f"ideal: {rate:g}/s")
    bounds = sorted({c["bound_s"] for c in pace["configurations"]})
    for bound in bounds:
        ax.axvline(bound, color=TARGET, linestyle=":", alpha=0.6)
    ax.set_title(
        f"Pace: emails delivered over time\n({pace['sends']} sends; dotted: the bounds "
        + ", ".join(f"{b:g} s" for b in bounds)
        + ")"
    )
    ax.set_xlabel("seconds after the first request")
    ax.set_ylabel("emails arrived")
    ax.set_xlim(0, max(longest, *bounds) + 1)
    ax.legend(fontsize="x-small")
    ax.grid(True, alpha=0.3)


def _pace_per_second(ax: Axes, results: dict[str, Any]) -> None:
    pace = results["pace"]
    for c in pace["configurations"]:
        per_second = c["emails_per_second"]
        ax.stairs(per_second, range(len(per_second) + 1), label=f"{c['configuration']}")
    ax.axhline(pace["relay_rate"], color=TARGET, linestyle="--", label="the relay's rate", zorder=0)
    ax.set_title("Pace: emails arrived in each second")
    ax.set_xlabel("seconds after the first request")
    ax.set_ylabel("emails")
    ax.legend(fontsize="x-small")
    ax.grid(True, alpha=0.3)


def panels(results: dict[str, Any]) -> list[Panel]:
    """The panels the results have figures for, in reading order."""
    found: list[Panel] = []
    if "levels" in results:
        found += [_latency_by_level, _throughput_by_level]
    if "lanes" in results:
        found += [_interactive_latency, _email_arrival, _interactive_timeline, _bulk_rate]
    if "pace" in results:
        found += [_pace_delivered, _pace_per_second]
    return found


def write_plot(results: dict[str, Any], path: Path) -> None:
    """Draw every panel the results have figures for into a PNG at `path`."""
    chosen = panels(results)
    if not chosen:
        raise ValueError("the results hold nothing to plot (no 'levels', 'lanes' or 'pace')")
    columns = 3 if len(chosen) > 4 else 2
    rows = -(-len(chosen) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 5.2 * rows), squeeze=False)
    try:
        cells = [ax for row in axes for ax in row]
        for draw, ax in zip(chosen, cells, strict=False):
            draw(ax, results)
        for ax in cells[len(chosen) :]:
            ax.set_axis_off()
        met = [t for t in results.get("targets", []) if t["met"]]
        figure.suptitle(
            f"securesend benchmark ({path.stem}): targets met "
            f"{len(met)} of {len(results.get('targets', []))}",
            fontsize="x-large",
        )
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__)
    parser.add_argument("results", help="a JSON written by python -m bench")
    parser.add_argument("--out", help="the PNG (default: the JSON's path, as .png)")
    args = parser.parse_args(argv)
    source = Path(args.results)
    out = Path(args.out) if args.out else source.with_suffix(".png")
    write_plot(json.loads(source.read_text()), out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
