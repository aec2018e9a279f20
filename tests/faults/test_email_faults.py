"""Fault case 1 through a real `notifier worker` process: SMTP answers that fail on cue.

- 421 at the greeting, then a normal server → delivered on the second try;
- 451 three times, then 250 → delivered, four attempts, retry_count 3, one message at the peer;
- 550 on RCPT → failed at once, never retried (one RCPT at the peer);
- the connection dropped after DATA, before the reply → resent once, with the same Message-ID;
- a server that stalls on RCPT → the send times out, counts as transient and is retried (then
  delivered); meanwhile every other notification flows: the worker is not blocked;
- 535 on AUTH → the email channel pauses with an alert (log line and metric), later recipients
  are held (not tried, not failed), and no recipient is marked failed.

One worker process per test (the 535 case needs wrong credentials for the whole worker).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.peers import TimedSmtpPeer
from tests.faults.processes import ProcessSet
from tests.faults.scenario import Producer, RowReader, local_api, service_env

pytestmark = pytest.mark.postgres

SMTP_TIMEOUT = 5.0  # the stalled RCPT costs this long; the others must all get through first
OTHERS = 8


def _item(address: str, title: str) -> dict[str, Any]:
    return {
        "user_id": f"mail-{uuid.uuid4().hex[:8]}",
        "title": title,
        "message": f"to {address}",
        "channels": ["email"],
        "recipient": {"email": address},
    }


async def _enqueue(producer: Producer, address: str, title: str) -> str:
    return str((await producer.enqueue(_item(address, title)))["id"])


def _settled(state: dict[str, Any]) -> bool:
    return state["lease_owner"] is None and state["status"] in ("delivered", "failed")


def _email_retrying(state: dict[str, Any]) -> bool:
    return bool(state["channels"]["email"]["status"] == "retrying")


async def test_smtp_faults_at_a_worker_process(fault_db: str, tmp_path: Path) -> None:
    flaky, nobody, stalling = "flaky@example.com", "nouser@example.com", "stall@example.com"
    greeted, dropped = "greeted@example.com", "dropped@example.com"
    async with (
        TimedSmtpPeer() as smtp,
        ProcessSet(tmp_path / "logs") as procs,
        local_api(fault_db) as producer,
        RowReader(fault_db) as rows,
    ):
        smtp.script_rcpt(flaky, *["451 4.3.0 Try again later"] * 3)
        smtp.script_rcpt(stalling, "stall")
        smtp.script_data(dropped, "drop")
        smtp.script_greetings("421 4.3.2 Service not available, try later")  # the first one
        env = service_env(
            fault_db,
            **smtp.settings(),
            smtp_timeout_seconds=SMTP_TIMEOUT,
            retry_base_seconds=0.2,
            retry_max_seconds=1,
        )
        await procs.worker(env)

        # Alone, so that its connection is the first one the worker opens.
        greeted_id = await _enqueue(producer, greeted, "421 at the greeting")
        greeted_state = await rows.wait(greeted_id, _settled, what="greeted", logs=procs.logs)

        stalled_id = await _enqueue(producer, stalling, "stalls once")
        await smtp.wait_until(lambda: smtp.stalled == 1, within=30)
        # While that send hangs, the rest is enqueued and must get through.
        others = [
            str(n["id"])
            for n in await producer.enqueue_batch(
                [_item(f"other-{i}@example.com", f"other {i}") for i in range(OTHERS)]
            )
        ]
        flaky_id = await _enqueue(producer, flaky, "451 three times")
        nobody_id = await _enqueue(producer, nobody, "550")
        dropped_id = await _enqueue(producer, dropped, "dropped after DATA")
        others_in = {f"<{nid}@notifier.test>" for nid in others}
        await smtp.wait_until(lambda: others_in <= set(smtp.message_ids()), within=30)
        assert smtp.stalled == 1, "the stalled send ended before the others got through"

        states = {
            nid: await rows.wait(nid, _settled, what=f"{nid} settled", logs=procs.logs)
            for nid in (stalled_id, flaky_id, nobody_id, dropped_id, *others)
        }

    # At the peer: every deliverable email exactly once, but the one whose reply was lost:
    # twice, with one Message-ID; the refused one never.
    received = smtp.message_ids()
    once = [f"<{nid}@notifier.test>" for nid in (greeted_id, stalled_id, flaky_id, *others)]
    twice = [f"<{dropped_id}@notifier.test>"] * 2
    assert sorted(received) == sorted(once + twice), received
    assert len(smtp.rcpts_for(flaky)) == 4
    assert len(smtp.rcpts_for(nobody)) == 1  # 550: never asked again
    assert len(smtp.rcpts_for(stalling)) == 2  # the stalled try, then the retry

    def email(nid: str) -> dict[str, Any]:
        return dict(states[nid]["channels"]["email"])

    states[greeted_id] = greeted_state
    assert (email(greeted_id)["status"], email(greeted_id)["attempts"]) == ("delivered", 2)
    assert greeted_state["retry_count"] == 1, greeted_state

    assert (email(dropped_id)["status"], email(dropped_id)["attempts"]) == ("delivered", 2)
    assert states[dropped_id]["status"] == "delivered", states[dropped_id]

    assert states[flaky_id]["status"] == "delivered" and states[flaky_id]["retry_count"] == 3
    assert (email(flaky_id)["status"], email(flaky_id)["attempts"]) == ("delivered", 4)

    assert states[nobody_id]["status"] == "failed" and states[nobody_id]["retry_count"] == 0
    refused = email(nobody_id)
    assert (refused["status"], refused["attempts"]) == ("failed", 1)
    assert "550" in refused["last_error"] and refused["next_attempt_at"] is None

    # The timeout was transient: retried and delivered, not failed, not an unknown outcome.
    assert states[stalled_id]["status"] == "delivered", states[stalled_id]
    assert (email(stalled_id)["status"], email(stalled_id)["attempts"]) == ("delivered", 2)
    assert states[stalled_id]["retry_count"] == 1
    for nid in others:
        assert (email(nid)["status"], email(nid)["attempts"]) == ("delivered", 1), states[nid]


async def test_smtp_auth_refused_pauses_email_with_an_alert(fault_db: str, tmp_path: Path) -> None:
    async with (
        TimedSmtpPeer() as smtp,
        ProcessSet(tmp_path / "logs") as procs,
        local_api(fault_db) as producer,
        RowReader(fault_db) as rows,
    ):
        smtp.credentials = ("notifier", "right-password")
        env = service_env(
            fault_db, **smtp.settings(smtp_username="notifier", smtp_password="wrong")
        )
        worker = await procs.worker(env)

        first = await _enqueue(producer, "first@example.com", "trips the breaker")
        tripped = await rows.wait(first, _email_retrying, what="retrying", logs=procs.logs)
        logins_when_tripped = smtp.failed_logins
        later = []
        for i in range(2):
            nid = await _enqueue(producer, f"later-{i}@example.com", "held")
            later.append(await rows.wait(nid, _email_retrying, what="held", logs=procs.logs))
        async with httpx.AsyncClient(timeout=10) as client:
            metrics = (await client.get(f"{worker.base_url}/metrics")).text
        log = worker.log_path.read_text(errors="replace")

    assert logins_when_tripped >= 1 and smtp.failed_logins == logins_when_tripped
    assert smtp.messages == []
    email = tripped["channels"]["email"]
    assert email["status"] == "retrying" and "535" in email["last_error"], tripped
    assert tripped["status"] not in ("failed", "partially_failed"), tripped
    for state in later:
        held = state["channels"]["email"]
        assert held["status"] == "retrying", state  # not failed: the recipient is not at fault
        assert held["attempts"] == 0 and "paused" in held["last_error"], state
        assert held["next_attempt_at"] is not None, state
    assert log.count("ALERT channel email paused") == 1, log
    assert 'notifier_channel_paused_total{channel="email"} 1.0' in metrics, metrics
