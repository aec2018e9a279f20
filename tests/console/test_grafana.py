"""``deploy/grafana/notifier.json`` charts only series the service really exports: the names
in its PromQL are checked against a scrape of a real API (``/metrics``) and of a real
``notifier worker`` process (its NOTIFIER_WORKER_METRICS_PORT), after that worker delivered an
email to a real SMTP peer — the two targets of ``deploy/prometheus.yml``."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.dispatch.harness import running_stack
from tests.dispatch.test_worker_process import worker_process
from tests.peers.smtp import SmtpPeer
from tests.support.service import free_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "notifier.json"
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count"),
}


def exported_series(exposition: str) -> set[str]:
    """Every series name a scrape can hold, from each family's name and type (a labelled
    family that has no sample yet is still declared by its # TYPE line)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["definition"])
    return queries


async def scrape(url: str, within: float = 15.0) -> str:
    """The worker's metrics server starts a moment after the process does: retried until it
    answers, within a bound."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                response = await client.get(url)
                response.raise_for_status()
                return response.text
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)  # no event to await from another process


async def test_dashboard_names_only_exported_series(
    tmp_path: Path, db_url: str, smtp_peer: SmtpPeer
) -> None:
    port = free_port()
    async with running_stack(db_url, worker=False, **smtp_peer.settings()) as stack:
        user = f"graf-{uuid.uuid4().hex[:8]}"
        await stack.put_recipient(user, email="ops@example.com")
        async with worker_process(stack, tmp_path / "worker.log", worker_metrics_port=str(port)):
            created = await stack.notify(user_id=user, title="t", message="m", channels=["email"])
            await stack.wait_settled(created["id"], within=20)
            worker = await scrape(f"http://127.0.0.1:{port}/metrics")
        api = (await stack.api.get("/metrics")).text

    exported = exported_series(api) | exported_series(worker)
    # The worker's delivery is in its scrape, with the labels the dashboard groups by.
    assert 'notifier_deliveries_total{channel="email",outcome="delivered"} 1.0' in worker
    queries = dashboard_queries()
    named = {name for query in queries for name in re.findall(r"\bnotifier_[a-z0-9_]+", query)}
    assert named, "the dashboard queries no notifier series"
    assert named <= exported, f"not exported: {sorted(named - exported)}"
    # Every family the service exports is on the dashboard (a new one needs a panel). The
    # parser reads each family's ``_created`` timestamps as a family of their own: not charted.
    families = {f.name for text in (api, worker) for f in text_string_to_metric_families(text)}
    charted = {f for f in families if any(f in name for name in named)}
    wanted = {f for f in families if f.startswith("notifier_") and not f.endswith("_created")}
    assert charted == wanted, wanted - charted
