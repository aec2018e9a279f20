"""What a webhook sender holds: the deliveries it claimed, waiting per endpoint in claim order,
and those being sent; and which one to start next.

A sender claims ahead — up to ``AHEAD`` times what it may send at once, and ``AHEAD`` times each
endpoint's bound — so that a slot freed by a finished request is filled from here at once, not
after a claim's round trip; and it claims again as soon as ``REFILL_AT`` sending rounds are all it
has left, so that a claim brings at least ``AHEAD - REFILL_AT`` rounds (up to ``CLAIM_MAX``
rows) and what is left covers the claim's own round trip. Bench scenario 6 (bench/RESULTS.md
"Webhook claim-ahead A/B"): claiming again at four rounds left (64 deliveries at a bound of 16,
15-20 ms of sending) let the lanes run dry whenever a claim took longer, which on a busy
machine one in ten did (30-90 ms against a median of 9). Holding sixteen rounds rather than
twelve makes each claim twice as large (eight rounds, 128 rows at a bound of 16), half the
claim statements per event: +3% events/s ("Webhook claim size A/B"). Requests to one endpoint
never exceed
its bound, and the endpoints take turns: a backlog at one waits here, leased, without holding
back the others. A held delivery not started in time is let go
(``WebhookSender._start_ready``): a slow endpoint's surplus comes back once its lease runs out,
and meanwhile its other due deliveries keep it at its bound.
"""

from __future__ import annotations

import uuid
from collections import deque

from notifier.storage.webhook_queue import ClaimedDelivery

# How many times its sending bound a sender holds (sending and waiting) per endpoint and in all,
# and how many rounds it has left when it claims again.
AHEAD = 16
REFILL_AT = 8
# The most one claim takes: a statement of a few hundred rows still takes milliseconds.
CLAIM_MAX = 256


class EndpointSlots:
    def __init__(self, *, per_endpoint: int, total: int) -> None:
        self.per_endpoint = per_endpoint
        self.total = total
        self._waiting: dict[uuid.UUID, deque[ClaimedDelivery]] = {}
        # Plain dicts, not Counters: a Counter's missing key is a Python-level call, and these
        # are read for every request (bench/RESULTS.md "Webhook per-request bookkeeping A/B").
        self._sending: dict[uuid.UUID, int] = {}
        self._sending_total = 0  # the sum of ``_sending``, asked for before every start
        self._held: dict[uuid.UUID, int] = {}  # waiting + sending, per endpoint
        self._ids: set[uuid.UUID] = set()

    @property
    def held(self) -> int:
        return len(self._ids)

    @property
    def sending(self) -> int:
        return self._sending_total

    @property
    def room(self) -> int:
        """How many more a claim may bring."""
        return AHEAD * self.total - self.held

    @property
    def wants_more(self) -> bool:
        """Whether to claim now: no more than ``REFILL_AT`` rounds are left, so a claim is
        worth its round trip and comes back before the lanes run dry."""
        return self.held <= REFILL_AT * self.total

    def held_per_endpoint(self) -> dict[uuid.UUID, int]:
        return dict(self._held)

    def full_endpoints(self) -> list[uuid.UUID]:
        """The endpoints a claim would bring nothing more of."""
        cap = AHEAD * self.per_endpoint
        return [endpoint for endpoint, n in self._held.items() if n >= cap]

    def holds(self, delivery_id: uuid.UUID) -> bool:
        return delivery_id in self._ids

    def add(self, delivery: ClaimedDelivery) -> None:
        endpoint = delivery.endpoint_id
        self._waiting.setdefault(endpoint, deque()).append(delivery)
        self._held[endpoint] = self._held.get(endpoint, 0) + 1
        self._ids.add(delivery.id)

    def next_ready(self) -> ClaimedDelivery | None:
        """The next delivery to send, if a slot allows one: from the endpoint that has waited
        longest for a turn (each endpoint goes to the back once served)."""
        if self._sending_total >= self.total:
            return None
        sending, cap = self._sending, self.per_endpoint
        for endpoint in self._waiting:
            if sending.get(endpoint, 0) < cap:
                break
        else:
            return None
        waiting = self._waiting.pop(endpoint)
        delivery = waiting.popleft()
        if waiting:
            self._waiting[endpoint] = waiting  # to the back of the turn order
        sending[endpoint] = sending.get(endpoint, 0) + 1
        self._sending_total += 1
        return delivery

    def done(self, delivery: ClaimedDelivery) -> None:
        """Its request ended (answered, failed, or given up)."""
        endpoint = delivery.endpoint_id
        self._ids.discard(delivery.id)
        sending = self._sending.get(endpoint, 0)
        if sending > 0:
            self._sending_total -= 1
            if sending > 1:
                self._sending[endpoint] = sending - 1
            else:
                del self._sending[endpoint]
        held = self._held.get(endpoint, 0)
        if held > 1:
            self._held[endpoint] = held - 1
        elif held:
            del self._held[endpoint]

    def take_waiting(self) -> list[ClaimedDelivery]:
        """Every delivery not started yet, no longer held (a stopping sender hands them back)."""
        waiting = [d for queue in self._waiting.values() for d in queue]
        self._waiting.clear()
        for delivery in waiting:
            self._ids.discard(delivery.id)
            held = self._held[delivery.endpoint_id] - 1
            if held > 0:
                self._held[delivery.endpoint_id] = held
            else:
                del self._held[delivery.endpoint_id]
        return waiting
