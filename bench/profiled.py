"""``python -m bench.profiled OUTFILE MODULE [ARGS…]``: run a service entry point under
pyinstrument, profiling only from the call of its ``main`` (imports excluded) until it returns
(SIGTERM makes ``notifier serve``/``worker`` return after a drain), then write the text report
(frames under 1% of the time dropped) to OUTFILE. With ``BENCH_PROFILE_FLAT=1`` in the
environment the report is flat (own time per function, the costliest first): it shows a cost
spread thin over many call sites, such as SQL compilation, that the call tree hides.

``MODULE`` is ``runtime`` (``notifier``'s CLI: ARGS are its command line) or a bench launcher
with a ``main()`` (``bench.noop_worker``).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from pyinstrument import Profiler


def main() -> int:
    out, module, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    target = importlib.import_module("runtime.cli" if module == "runtime" else module)

    profiler = Profiler(interval=0.002, async_mode="disabled")
    profiler.start()
    try:
        code = target.main(args) if module == "runtime" else target.main()
    finally:
        profiler.stop()
        text = profiler.output_text(
            unicode=True,
            color=False,
            flat=os.environ.get("BENCH_PROFILE_FLAT") == "1",
            processor_options={"filter_threshold": 0.01},
        )
        out.write_text(text)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
