"""bench/RESULTS.md keeps what was written by hand when `bench.run` rewrites its figures."""

from __future__ import annotations

from bench.report import hand_written_sections

RESULTS = """# notifier benchmarks: results

- **Command:** `python -m bench.run`

## Figures

| figure | value |

## State machine A/B (hand-written)

before 100/s, after 101/s

## Targets

- `dispatch_noop` met

## Email duplicate window

p99 30 ms
### its method
one line

## Where the time goes (targets not met)

profile
"""


def test_sections_the_bench_did_not_generate_are_kept_in_order() -> None:
    assert hand_written_sections(RESULTS) == [
        "## State machine A/B (hand-written)\n\nbefore 100/s, after 101/s",
        "## Email duplicate window\n\np99 30 ms\n### its method\none line",
    ]


def test_a_file_of_generated_sections_keeps_nothing() -> None:
    assert hand_written_sections("# results\n\n## Figures\n\nx\n\n## Targets\n\ny\n") == []
