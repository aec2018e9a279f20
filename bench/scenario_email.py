"""Scenario 7: email throughput (issue 15), against its own baseline.

- ``dispatch_email``: one ``notifier worker`` drains N queued email notifications into
  ``bench/smtp_sink.py`` (aiosmtpd, 250 to everything), measured like scenario 1's drains
  (``scenario_dispatch.drain_notifier``: from the enqueue's commit until every row is settled
  and the sink has every message).
- Diagnostic (in the notes, not a figure): ``bench/premade_email_worker.py``, the same worker
  sending one pre-built message, which isolates the cost of building the MIME.
- Baseline: ``bench/raw_smtp.py``, bare aiosmtplib sending the same messages (built by the
  worker's own ``build_email``, before the clock) to the same sink over the same number of
  connections (``NOTIFIER_SMTP_MAX_CONNECTIONS``), from its first connect until the sink has
  them all. Runs alternate: baseline, worker, baseline, worker, …

The gap between the two is what the worker adds per email: the claim and the outcome record
in PostgreSQL, building the message, and the channel's own bookkeeping.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from bench.data import prime_statistics
from bench.databases import connect
from bench.figures import Figure, Target
from bench.harness import Bench
from bench.processes import PYTHON, Child, free_port
from bench.scenario_dispatch import ChildReceiver, drain_notifier
from notifier.settings import Settings

SCENARIO = "7. Email throughput"
EMAIL_N = 3_000  # per run at most: the worker's drain is capped in time anyway
TARGET = Target("ratio_min", 0.8, ">= 0.8x raw aiosmtplib (issue 15)")


async def run(bench: Bench) -> list[Figure]:
    n, runs = min(bench.sizes.dispatch_n, EMAIL_N), bench.runs
    connections = Settings().smtp_max_connections
    worker_samples: list[float] = []
    raw_samples: list[float] = []
    premade_samples: list[float] = []
    async with bench.database("email") as url:
        connection = await connect(url)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(connection.close)
            await prime_statistics(connection, n, users=100, channels=("email",))
            port = free_port()
            sink = await bench.spawn(
                "smtp-sink", [PYTHON, "-m", "bench.smtp_sink", str(port)], pipe=True
            )
            stack.push_async_callback(_quit, bench, sink)
            await sink.event("ready", timeout=30)
            raw = await bench.spawn(
                "raw-smtp", [PYTHON, "-m", "bench.raw_smtp", str(port), str(connections)], pipe=True
            )
            stack.push_async_callback(_quit, bench, raw)
            await raw.event("ready", timeout=30)
            receiver = ChildReceiver(sink, "count", "count")
            worker_env = {
                "NOTIFIER_SMTP_HOST": "127.0.0.1",
                "NOTIFIER_SMTP_PORT": str(port),
                "NOTIFIER_SMTP_FROM": "Bench <bench@notifier.test>",
                "NOTIFIER_SMTP_STARTTLS": "false",
                "NOTIFIER_SMTP_MAX_CONNECTIONS": str(connections),
            }
            options: dict[str, Any] = {
                "module": "runtime",
                "args": ("worker",),
                "env": worker_env,
                "channels": ("email",),
                "recipient": {"email": "someone@bench.test"},
                "receiver": receiver,
            }
            for index in range(runs):
                bench.log(f"email run {index + 1}/{runs}")
                raw_samples.append(await _raw_run(bench, raw, receiver, n))
                drain = await drain_notifier(bench, url, connection, n, label="-email", **options)
                worker_samples.append(drain.rate)
                # Diagnostic, not a figure: the same worker sending one pre-built message.
                premade = await drain_notifier(
                    bench,
                    url,
                    connection,
                    n,
                    label="-premade",
                    **{**options, "module": "bench.premade_email_worker", "args": ()},
                )
                premade_samples.append(premade.rate)
            figure = Figure(
                "dispatch_email",
                "notifications/s",
                worker_samples,
                raw_samples,
                f"raw aiosmtplib messages/s ({connections} connections)",
                "higher",
                SCENARIO,
                TARGET,
            )
            if figure.met is False:

                async def profiled(path: Path) -> None:
                    await drain_notifier(
                        bench, url, connection, n, profile_to=path, label="-profiled", **options
                    )

                await bench.profiled("dispatch_email (worker process)", profiled)
    bench.note(
        SCENARIO,
        f"{n} email notifications per run, {connections} SMTP connections on both sides "
        "(NOTIFIER_SMTP_MAX_CONNECTIONS), one sink process (`bench/smtp_sink.py`) shared by "
        "both, no TLS or AUTH. Baseline: `bench/raw_smtp.py` (aiosmtplib `sendmail`, the "
        "worker's `build_email` messages built before the clock). Worker: service defaults "
        "otherwise; its drain is capped like scenario 1's.",
    )
    bench.note(
        SCENARIO,
        "Diagnostic: the same worker with `build_email` swapped for one message built at start "
        "(`bench/premade_email_worker.py`) drained "
        + ", ".join(f"{rate:.0f}" for rate in premade_samples)
        + " notifications/s in the same runs (real worker: "
        + ", ".join(f"{rate:.0f}" for rate in worker_samples)
        + "; raw: "
        + ", ".join(f"{rate:.0f}" for rate in raw_samples)
        + "): the difference between the two workers is what building the MIME costs.",
    )
    return [figure]


async def _raw_run(bench: Bench, raw: Child, receiver: ChildReceiver, n: int) -> float:
    await receiver.arm(n)
    await raw.send(f"send {n} {receiver.generation}")
    started = await raw.event("started", timeout=120, gen=receiver.generation)
    ended = await receiver.finished(timeout=max(120.0, n / 20))
    sent = await raw.event("sent", timeout=120, gen=receiver.generation)
    rate = n / (ended - float(started["t"]))
    cpu = float(sent["cpu"])
    bench.log(
        f"  raw aiosmtplib: {n} in {ended - float(started['t']):.2f}s ({rate:.0f}/s, CPU "
        f"{cpu:.1f}s = {1000 * cpu / n:.2f} ms each)"
    )
    return rate


async def _quit(bench: Bench, child: Child) -> None:
    with contextlib.suppress(Exception):
        await child.send("quit")
    await bench.stop(child)
