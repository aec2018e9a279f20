"""Which task status may follow which. A status reported again is not a transition (a retrying
producer); a failed or cancelled task may restart by going back to ``running``."""

from __future__ import annotations

from notifier.models.task import TaskStatus

S = TaskStatus

ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.PENDING: frozenset({S.RUNNING, S.PAUSED, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.PAUSED, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.PAUSED: frozenset({S.RUNNING, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.RUNNING}),
    S.CANCELLED: frozenset({S.RUNNING}),
    S.COMPLETED: frozenset(),
}

RESTARTS = frozenset({(S.FAILED, S.RUNNING), (S.CANCELLED, S.RUNNING)})


class IllegalTransition(ValueError):
    def __init__(self, current: TaskStatus, requested: TaskStatus) -> None:
        self.current = current
        self.requested = requested
        self.allowed = sorted(ALLOWED_TRANSITIONS[current])
        allowed = ", ".join(self.allowed) or "none (the task is finished)"
        super().__init__(
            f"a {current} task cannot become {requested}; allowed next statuses: {allowed}"
        )


def check_transition(current: TaskStatus, requested: TaskStatus) -> bool:
    """True if this is a real transition, False if the status is unchanged; raises if illegal."""
    if current == requested:
        return False
    if requested not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(current, requested)
    return True


def is_restart(current: TaskStatus, requested: TaskStatus) -> bool:
    return (current, requested) in RESTARTS
