"""``python -m bench.run [--quick] [--scenarios 1,2] [--runs 3] [--no-write] [--service-env K=V]``

Runs the scenarios on a PostgreSQL database of their own (created and dropped), prints one JSON
line per figure on stdout (progress goes to stderr), and rewrites ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench import (
    scenario_dispatch,
    scenario_email,
    scenario_enqueue,
    scenario_growth,
    scenario_latency,
    scenario_sockets,
    scenario_webhooks,
)
from bench.figures import Figure
from bench.harness import BENCH_DIR, SERVICE_ENV, Bench
from bench.machine import git_commit, machine_info, postgres_version, utc_now_text
from bench.processes import raise_nofile
from bench.report import write_results
from bench.sizes import SIZES

SCENARIOS: dict[int, tuple[str, Callable[[Bench], Awaitable[list[Figure]]]]] = {
    1: (scenario_dispatch.SCENARIO, scenario_dispatch.run),
    2: (scenario_enqueue.SCENARIO, scenario_enqueue.run),
    3: (scenario_latency.SCENARIO, scenario_latency.run),
    4: (scenario_sockets.SCENARIO, scenario_sockets.run),
    5: (scenario_growth.SCENARIO, scenario_growth.run),
    6: (scenario_webhooks.SCENARIO, scenario_webhooks.run),
    7: (scenario_email.SCENARIO, scenario_email.run),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes (the test suite's)")
    parser.add_argument("--scenarios", default="1,2,3,4,5,6,7", help="comma-separated, e.g. 1,3")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    parser.add_argument(
        "--results", type=Path, default=BENCH_DIR / "RESULTS.md", help="where to write"
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NOTIFIER_X=VALUE",
        help="a setting for every service process (repeatable), e.g. for an A/B",
    )
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the profiled pass that runs when a target is not met",
    )
    return parser


async def _run(args: argparse.Namespace, command: str) -> int:
    sizes = SIZES["quick" if args.quick else "smoke" if args.smoke else "full"]
    chosen = sorted({int(s) for s in args.scenarios.split(",") if s.strip()})
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        print(f"bench: unknown scenario(s) {unknown}; known: 1-{max(SCENARIOS)}", file=sys.stderr)
        return 2
    for setting in args.service_env:
        key, sep, value = setting.partition("=")
        if not sep or not key.startswith("NOTIFIER_"):
            print(f"bench: --service-env wants NOTIFIER_X=VALUE, not {setting!r}", file=sys.stderr)
            return 2
        SERVICE_ENV[key] = value
    if args.runs < 1:
        print("bench: --runs must be at least 1", file=sys.stderr)
        return 2
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # Unwind through every `finally`: children stopped, databases dropped.
        loop.add_signal_handler(sig, main_task.cancel)
    nofile = raise_nofile(sizes.sockets * 2 + 4096)
    started = time.monotonic()
    load_before = os.getloadavg()
    pg = await postgres_version(Bench(sizes, args.runs, Path(".")).admin_url)
    machine = machine_info(pg)
    figures: list[Figure] = []
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="notifier-bench-") as workdir:
        bench = Bench(
            sizes=sizes,
            runs=args.runs,
            workdir=Path(workdir),
            profile=not args.no_profile and sizes.name != "smoke",
        )
        bench.log(
            f"sizes {sizes.name}, runs {args.runs}, scenarios {chosen}, RLIMIT_NOFILE {nofile}"
        )
        for number in chosen:
            title, scenario = SCENARIOS[number]
            bench.log(f"=== {title}")
            scenario_started = time.monotonic()
            try:
                produced = await scenario(bench)
            except Exception as exc:
                failures[title] = f"{type(exc).__name__}: {exc}"
                bench.log(f"{title} FAILED:\n{traceback.format_exc()}")
                produced = []
            finally:
                await bench.stop_all()
            for figure in produced:
                print(json.dumps(figure.as_json(), separators=(",", ":")), flush=True)
            figures.extend(produced)
            bench.log(f"{title}: {time.monotonic() - scenario_started:.0f}s")
        wall = time.monotonic() - started
        bench.log(f"all done in {wall:.0f}s")
        if not args.no_write:
            write_results(
                args.results,
                figures=figures,
                failures=failures,
                bench=bench,
                machine=machine,
                date=utc_now_text(),
                commit=git_commit(),
                command=command,
                wall_seconds=wall,
                load_before=load_before,
            )
            bench.log(f"wrote {args.results}")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(raw)
    command = shlex.join(["python", "-m", "bench.run", *raw])
    try:
        return asyncio.run(_run(args, command))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


if __name__ == "__main__":
    sys.exit(main())
