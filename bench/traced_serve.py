"""``python -m bench.traced_serve OUTFILE``: ``notifier serve`` with tracemalloc on.

On SIGUSR1 it writes the 25 biggest Python allocation sites (by line, with the number of
blocks) and the traced total to OUTFILE: the memory profile of scenario 4. tracemalloc sees
Python-level allocations only; RSS minus the traced growth is native memory (zlib contexts of
permessage-deflate, SSL, libuv/asyncio buffers) and allocator overhead.
"""

from __future__ import annotations

import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def main() -> int:
    out = Path(sys.argv[1])
    tracemalloc.start(1)
    baseline: list[tracemalloc.Snapshot] = []

    def dump(_sig: int, _frame: FrameType | None) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if not baseline:  # first signal: the reference point, before the sockets
            baseline.append(snapshot)
            out.with_suffix(".ready").write_text("ok")
            return
        stats = snapshot.compare_to(baseline[0], "lineno")
        grown = sum(s.size_diff for s in stats)
        lines = [f"traced Python memory grew by {grown / 1024:.0f} KiB; biggest growth:"]
        for stat in stats[:25]:
            lines.append(
                f"{stat.size_diff / 1024:10.1f} KiB {stat.count_diff:8d} blocks  "
                f"{stat.traceback[0].filename.split('site-packages/')[-1]}:"
                f"{stat.traceback[0].lineno}"
            )
        out.write_text("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, dump)
    from runtime.cli import main as notifier

    return notifier(["serve"])


if __name__ == "__main__":
    sys.exit(main())
