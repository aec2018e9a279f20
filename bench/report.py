"""``bench/RESULTS.md``: machine, date, commit, command, the figures, targets and profiles."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bench.figures import Figure
from bench.harness import Bench

PROFILE_LINES = 140

# The sections this module writes; every other ``## `` section of RESULTS.md was written by
# hand (an A/B, a one-off measurement) and is carried over when the file is rewritten.
GENERATED_SECTIONS = (
    "Figures",
    "Scenarios that failed",
    "Targets",
    "How each figure was measured",
    "Where the time goes",
)


def hand_written_sections(text: str) -> list[str]:
    """The ``## `` sections of ``text`` that ``write_results`` did not generate, in order."""
    sections: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            if current is not None:
                sections.append("\n".join(current).rstrip())
            heading = line[3:]
            generated = any(heading.startswith(name) for name in GENERATED_SECTIONS)
            current = None if generated else [line]
        elif current is not None:
            current.append(line)
    if current is not None:
        sections.append("\n".join(current).rstrip())
    return sections


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _met(figure: Figure) -> str:
    if figure.met is None:
        return "-"
    return "**met**" if figure.met else "**not met**"


def _table(figures: Sequence[Figure]) -> list[str]:
    lines = [
        "| figure | value | baseline | ratio | runs: min - max (baseline) | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        spread = (
            f"{len(f.samples)}: {_num(min(f.samples))} - {_num(max(f.samples))} "
            f"({_num(min(f.baseline_samples))} - {_num(max(f.baseline_samples))})"
        )
        lines.append(
            f"| `{f.name}` | {_num(f.value)} {f.unit} | {_num(f.baseline)} "
            f"({f.baseline_name}) | {f.ratio:.3g}x | {spread} | {f.target.text if f.target else ''}"
            f" | {_met(f)} |"
        )
    return lines


def _trim(profile: str) -> str:
    lines = [line.rstrip() for line in profile.splitlines()]
    if len(lines) > PROFILE_LINES:
        lines = [*lines[:PROFILE_LINES], f"… ({len(lines) - PROFILE_LINES} more lines)"]
    return "\n".join(lines)


def write_results(
    path: Path,
    *,
    figures: Sequence[Figure],
    failures: dict[str, str],
    bench: Bench,
    machine: dict[str, str],
    date: str,
    commit: str,
    command: str,
    wall_seconds: float,
    load_before: tuple[float, float, float] | None = None,
) -> None:
    load_after = os.getloadavg()
    out: list[str] = [
        "# notifier benchmarks: results",
        "",
        "Written by `bench/run.py` (its sections are rewritten on every run; hand-written "
        "sections, at the end, are kept; see `bench/README.md` for what each scenario does "
        "and how to read it).",
        "",
        f"- **Command:** `{command}` (sizes: {bench.sizes.name}, {bench.runs} runs per figure)",
        f"- **Date:** {date}",
        f"- **Commit:** `{commit}`",
        f"- **Wall time:** {wall_seconds / 60:.1f} min",
        f"- **Machine:** {machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM, "
        f"{machine['kernel']}, {machine['postgresql']}, Python {machine['python']}, "
        f"RLIMIT_NOFILE {machine['nofile']}",
        "- **Noise:** this 2-core machine is shared (test suites, soak tests and container "
        "builds may run beside the bench), so absolute figures swing from run to run; "
        "every figure is therefore also given as a ratio to a baseline measured in the same "
        "run, alternating with it where the scenario allows. Load average (1/5/15 min) "
        + (
            f"at the start {load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, "
            if load_before
            else ""
        )
        + f"at the end {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f}.",
        "",
        "## Figures",
        "",
        "value and baseline are medians over the runs; ratio = value / baseline. For "
        "throughput higher is better; for latency, memory and time lower is better.",
        "",
        *_table(figures),
        "",
    ]
    if failures:
        out += ["## Scenarios that failed", ""]
        out += [
            f"- {title}: `{error.splitlines()[0] if error else ''}` (log on stderr)"
            for title, error in failures.items()
        ]
        out.append("")
    targets = [f for f in figures if f.target is not None]
    if targets:
        out += ["## Targets", ""]
        for f in targets:
            assert f.target is not None
            state = "met" if f.met else "NOT MET"
            shown = (
                f"ratio {f.ratio:.3g}"
                if f.target.kind != "value_max"
                else f"{_num(f.value)} {f.unit}"
            )
            out.append(f"- `{f.name}` {f.target.text}: {shown}: **{state}**")
        out.append("")
    out += ["## How each figure was measured", ""]
    for scenario, notes in sorted(bench.notes.items()):
        out += [f"### {scenario}", ""]
        out += [f"- {note}" for note in notes]
        out.append("")
    missed = [f for f in targets if f.met is False]
    if missed:
        out += [
            "## Where the time goes (targets not met)",
            "",
            "Profiles of one extra, shorter pass of each scenario whose target was missed, "
            "taken with pyinstrument (text renderer, frames under 1% of the time dropped) on "
            "the process named; the profiled pass is not part of the figures. Wall-clock "
            "profiles: idle time in the event loop (`select`/`run_once`) is time spent "
            "waiting for PostgreSQL or for work.",
            "",
        ]
        for key, profile in bench.profiles.items():
            out += [f"### {key}", "", "```", _trim(profile), "```", ""]
        if not bench.profiles:
            out += ["(profiling was skipped in this run: `--no-profile`)", ""]
    kept = hand_written_sections(path.read_text()) if path.exists() else []
    for section in kept:
        out += [section, ""]
    path.write_text("\n".join(out).rstrip() + "\n")
