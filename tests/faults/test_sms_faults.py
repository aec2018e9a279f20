"""Fault case 3 through a real `notifier worker` process and Twilio's Messages API (a local
stand-in for the real SDK), with status callbacks into the API:

- 21211 / 21614 / 21608 → failed at once, one POST each;
- 21610 → failed, and the recipient's opt-out is stored: their next SMS is skipped unsent;
- 20429 twice, then 201 → sent on the third POST, retry_count 2;
- a 500 after Twilio created the message (the reply lost) → not re-sent blindly: the next
  attempt finds the message and adopts its SID; one message at Twilio;
- callbacks: signed "delivered" → delivered; a bad signature → 403 and no change; a duplicate
  and an out-of-order "sent" afterwards → no change; "undelivered" → failed;
- a 201 whose body is not JSON (a proxy's HTML) after Twilio created the message → an unknown
  outcome, recorded; the next attempt finds the message and adopts it: one SMS, settled (it
  used to escape as a bare JSON error: nothing recorded, the same SMS again every lease).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.faults.processes import ProcessSet
from tests.faults.scenario import Producer, RowReader, local_api, service_env
from tests.peers import TwilioPeer, TwilioReply
from tests.peers.base import free_port

pytestmark = pytest.mark.postgres

PERMANENT = {"+15005550001": 21211, "+15005550002": 21614, "+15005550003": 21608}
OPTED_OUT, THROTTLED, LOST = "+15005550004", "+15005550005", "+15005550007"


def _settled(state: dict[str, Any]) -> bool:
    sms = state["channels"]["sms"]["status"]
    return state["lease_owner"] is None and sms in ("sent", "failed", "skipped")


def _sms_is(status: str) -> Any:
    return lambda state: state["channels"]["sms"]["status"] == status


async def _sms_to(producer: Producer, phone: str, *, user: str | None = None) -> str:
    user = user or f"sms-{uuid.uuid4().hex[:8]}"
    await producer.put_recipient(user, phone=phone)
    created = await producer.enqueue(
        {"user_id": user, "title": "Text", "message": f"to {phone}", "channels": ["sms"]}
    )
    return str(created["id"])


async def test_twilio_faults_and_callbacks_at_a_worker_process(
    fault_db: str, tmp_path: Path
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    async with TwilioPeer() as twilio:
        for phone, code in PERMANENT.items():
            twilio.fail_to(phone, TwilioReply.error(400, code))
        twilio.fail_to(OPTED_OUT, TwilioReply.error(400, 21610))
        twilio.script_to(THROTTLED, *[TwilioReply.error(429, 20429)] * 2)
        twilio.script_to(LOST, TwilioReply.error(500, 20500, create=True))
        settings = {**twilio.settings(), "public_base_url": public}
        async with (
            ProcessSet(tmp_path / "logs") as procs,
            local_api(fault_db, port=port, **settings) as producer,
            RowReader(fault_db) as rows,
        ):
            await procs.worker(service_env(fault_db, **settings))

            permanent = {phone: await _sms_to(producer, phone) for phone in PERMANENT}
            opted_user = f"sms-{uuid.uuid4().hex[:8]}"
            opted = await _sms_to(producer, OPTED_OUT, user=opted_user)
            throttled = await _sms_to(producer, THROTTLED)
            lost = await _sms_to(producer, LOST)
            states = {
                nid: await rows.wait(nid, _settled, what=f"{nid} settled", logs=procs.logs)
                for nid in (*permanent.values(), opted, throttled, lost)
            }
            # The opt-out is stored: the same user's next SMS never reaches Twilio.
            after_opt_out = await _sms_to(producer, OPTED_OUT, user=opted_user)
            skipped = await rows.wait(after_opt_out, _settled, what="skipped", logs=procs.logs)

            # Status callbacks, signed as Twilio signs them, to the URL the worker gave Twilio.
            by_number = {m.to: m for m in twilio.messages}
            sent, gone = by_number[THROTTLED], by_number[LOST]
            url = f"{public}/v1/webhooks/twilio/status"
            assert sent.status_callback == url
            forged = await twilio.send_status_callback(sent.sid, "delivered", url, signature="x")
            still_sent = await rows.notification(throttled)
            callbacks = [await twilio.send_status_callback(sent.sid, "delivered", url)]
            delivered = await rows.wait(throttled, _sms_is("delivered"), what="delivered")
            callbacks += [
                await twilio.send_status_callback(sent.sid, "delivered", url),  # duplicate
                await twilio.send_status_callback(sent.sid, "sent", url),  # out of order
                await twilio.send_status_callback(gone.sid, "undelivered", url),
            ]
            undelivered = await rows.wait(lost, _sms_is("failed"), what="undelivered")
            final = await rows.notification(throttled)

    def sms(nid: str) -> dict[str, Any]:
        return dict(states[nid]["channels"]["sms"])

    for phone, code in PERMANENT.items():
        nid = permanent[phone]
        assert (sms(nid)["status"], sms(nid)["attempts"]) == ("failed", 1), states[nid]
        assert str(code) in sms(nid)["last_error"], states[nid]
        assert twilio.posts_to[phone] == 1
    assert sms(opted)["status"] == "failed" and "21610" in sms(opted)["last_error"]
    opted_out = skipped["channels"]["sms"]
    assert (opted_out["status"], opted_out["attempts"]) == ("skipped", 0), skipped
    assert "opted out" in opted_out["last_error"], skipped
    assert twilio.posts_to[OPTED_OUT] == 1

    assert (sms(throttled)["status"], sms(throttled)["attempts"]) == ("sent", 3)
    assert states[throttled]["retry_count"] == 2
    assert twilio.posts_to[THROTTLED] == 3

    # The lost reply: one POST, one message, adopted on the next attempt, not sent again.
    assert twilio.posts_to[LOST] == 1
    assert [m.to for m in twilio.messages].count(LOST) == 1
    assert sms(lost)["status"] == "sent", states[lost]

    assert forged == 403
    assert still_sent is not None and still_sent["channels"]["sms"]["status"] == "sent"
    assert callbacks == [204, 204, 204, 204]
    assert delivered["status"] == "delivered", delivered
    assert final is not None and final["channels"]["sms"]["status"] == "delivered", final
    assert undelivered["status"] == "failed", undelivered


async def test_a_201_that_is_not_json_sends_one_sms_and_settles(
    fault_db: str, tmp_path: Path
) -> None:
    garbled = "+15005550008"
    async with TwilioPeer() as twilio:
        twilio.script_to(garbled, TwilioReply(raw_body="<html>queued</html>"))
        async with (
            ProcessSet(tmp_path / "logs") as procs,
            local_api(fault_db, **twilio.settings()) as producer,
            RowReader(fault_db) as rows,
        ):
            await procs.worker(service_env(fault_db, **twilio.settings()))
            nid = await _sms_to(producer, garbled)
            # Bounded by a few leases (5 s each): a row re-claimed without a record never
            # settles, and sends the SMS again each time.
            state = await rows.wait(nid, _settled, what="settled", timeout=20, logs=procs.logs)
            [provider_id] = await rows.fetch(
                "SELECT provider_id FROM notification_deliveries WHERE notification_id = $1",
                uuid.UUID(nid),
            )

    [message] = twilio.messages
    assert twilio.posts_to[garbled] == 1
    sms = state["channels"]["sms"]
    # Two attempts: the garbled 201 (recorded as an unknown outcome), then the look-up that
    # found the message and adopted it instead of sending it again.
    assert (sms["status"], sms["attempts"]) == ("sent", 2), state
    assert state["status"] == "delivered" and state["retry_count"] == 1, state
    assert provider_id["provider_id"] == message.sid
    assert len(twilio.list_requests) == 1
