"""``bench.scale``'s Markdown tables (the medians, then every run), from its measurements or
from the JSON lines it printed (``--tables``)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.scale_measure import Measured


def rate_cell(r: Measured) -> str:
    """Throughput for a drain; for a fixed-rate run the load offered (its window holds the
    load generators' start and the wait after the load, so notifications/window is no rate)."""
    offered = r.extra.get("offered_per_second")
    return f"{r.rate:.0f}" if offered is None else f"offered {offered:g}"


def runs_table(rows: list[Measured]) -> str:
    names = sorted({k for r in rows for k in r.cpu})
    head = "| run | notifications | /s | p50 ms | p99 ms | " + " | ".join(
        f"{n} CPU s (ms/notif.)" for n in names
    )
    lines = [head + " |", "|" + "---|" * (5 + len(names))]
    for r in rows:
        each = r.cpu_ms_each()
        cells = [f"{r.cpu[n]:.2f} ({each[n]:.3f})" if n in r.cpu else "—" for n in names]
        p50 = "—" if r.p50_ms is None else f"{r.p50_ms:.1f}"
        p99 = "—" if r.p99_ms is None else f"{r.p99_ms:.1f}"
        lines.append(
            f"| {r.label} | {r.notifications} | {rate_cell(r)} | {p50} | {p99} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def medians_table(rows: list[Measured]) -> str:
    by: dict[str, list[Measured]] = {}
    for r in rows:
        by.setdefault(r.label, []).append(r)
    names = sorted({k for r in rows for k in r.cpu})
    out = [
        "| measurement | runs | median /s | median p50 / p99 ms | median CPU ms per "
        "notification: " + ", ".join(names) + " | all counted |",
        "|---|---|---|---|---|---|",
    ]
    for label, group in by.items():
        p50s = [r.p50_ms for r in group if r.p50_ms is not None]
        p99s = [r.p99_ms for r in group if r.p99_ms is not None]
        latency = f"{statistics.median(p50s):.1f} / {statistics.median(p99s):.1f}" if p99s else "—"
        rate = (
            rate_cell(group[0])
            if "offered_per_second" in group[0].extra
            else f"{statistics.median(r.rate for r in group):.0f}"
        )
        per = [
            f"{statistics.median(r.cpu_ms_each()[n] for r in group):.3f}"
            if n in group[0].cpu
            else "—"
            for n in names
        ]
        total = statistics.median(sum(r.cpu_ms_each().values()) for r in group)
        out.append(
            f"| {label} | {len(group)} | {rate} | {latency} | {', '.join(per)} | {total:.3f} |"
        )
    return "\n".join(out)


def render(rows: list[Measured]) -> str:
    return medians_table(rows) + "\n\n" + runs_table(rows)


def load_rows(path: Path) -> list[Measured]:
    rows = []
    for line in path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        data = json.loads(line)
        extra = {k: data[k] for k in ("offered_per_second", "load_seconds", "missing") if k in data}
        rows.append(
            Measured(
                data["label"],
                data["notifications"],
                data["seconds"],
                data["cpu_seconds"],
                data["p50_ms"],
                data["p99_ms"],
                extra,
            )
        )
    return rows
