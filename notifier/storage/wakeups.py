"""Making rows due and waking the workers that send them: one call.

Two kinds of worker wait for work, each on its own LISTEN channel: the dispatchers
(``DISPATCH``, notifications) and the webhook senders (``WEBHOOKS``). A writer that makes rows
due calls, inside its transaction::

    await wakeups.rows_due(session, DISPATCH)

On PostgreSQL that queues a NOTIFY in the transaction: the commit delivers it, so no worker
wakes for a row it cannot see yet, and a rollback drops it. Once the transaction commits, the
in-process wake-ups run too (a worker in this very process: ``notifier run``, and the tests),
and not at all if it rolls back. A writer whose own SQL carries the NOTIFY (the enqueue's group
commit, docs/architecture.md "The hot path") calls ``committed(DISPATCH)`` after its commit.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from notifier.storage.notifications import DISPATCH_WAKEUP_CHANNEL
from notifier.storage.webhooks import WEBHOOK_WAKEUP_CHANNEL

DISPATCH = DISPATCH_WAKEUP_CHANNEL
WEBHOOKS = WEBHOOK_WAKEUP_CHANNEL

# Keys in a session's ``info``: who to wake once its transaction commits, whether the
# transaction ending now committed, and whether the session's listeners are in place.
_PENDING = "notifier.wakeups.pending"
_COMMITTED = "notifier.wakeups.committed"
_LISTENING = "notifier.wakeups.listening"


class Wakeups:
    """The in-process wake-ups of one process, by LISTEN channel, and the one call that
    makes rows due (``rows_due``)."""

    def __init__(self) -> None:
        self._local: dict[str, list[Callable[[], None]]] = {DISPATCH: [], WEBHOOKS: []}

    def subscribe(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every commit that made ``channel``'s rows due."""
        self._local[channel].append(callback)

    def unsubscribe(self, channel: str, callback: Callable[[], None]) -> None:
        self._local[channel].remove(callback)

    async def rows_due(self, session: AsyncSession, channel: str = DISPATCH) -> None:
        """Wake ``channel``'s workers once the session's transaction commits."""
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(select(func.pg_notify(channel, "")))
        self.after_commit(session, channel)

    def after_commit(self, session: AsyncSession, channel: str) -> None:
        """Only the in-process half of ``rows_due``: for a writer whose SQL queues the NOTIFY
        in the transaction itself (the webhook outbox, ``transitions.record_transitions``)."""
        sync = session.sync_session
        if not sync.info.get(_LISTENING):
            sync.info[_LISTENING] = True
            event.listen(sync, "after_commit", _mark_committed)
            event.listen(sync, "after_transaction_end", _transaction_ended)
        _, channels = sync.info.setdefault(_PENDING, (self, set()))
        channels.add(channel)

    def committed(self, *channels: str) -> None:
        """Run the in-process wake-ups of ``channels``: for a writer whose SQL sent the
        NOTIFY itself, after its commit."""
        for channel in channels:
            for callback in self._local[channel]:
                callback()


def _mark_committed(session: Session) -> None:
    session.info[_COMMITTED] = True


def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    # after_commit fires for a savepoint's release too: only the outermost transaction's end
    # says whether the rows are visible.
    committed = session.info.pop(_COMMITTED, False)
    if transaction.parent is not None:
        return
    pending: tuple[Wakeups, set[str]] | None = session.info.pop(_PENDING, None)
    if committed and pending is not None:
        wakeups, channels = pending
        wakeups.committed(*channels)
