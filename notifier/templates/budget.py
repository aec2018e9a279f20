"""Time-boxing a render, in the thread that runs it.

CPython cannot stop a thread from outside: a render that loops for an hour in a thread pool
keeps its thread (and a share of the GIL) for that hour, whatever deadline its caller stops
waiting at, and a few such renders take the whole pool. So the render stops itself. While it
runs, a ``sys.settrace`` hook on that thread counts steps — every line executed in compiled
template code (each loop iteration is at least one), and every Python function call made
anywhere during the render (filters, macros, Babel, Jinja's runtime) — and raises
``OutOfBudget`` into the render once the steps or the wall-clock deadline run out. The error
unwinds the template's frames like any exception and the thread is free again.

What a trace hook cannot interrupt is one long step in C (``'x' * 10**9``, a huge sort):
the sandbox's size guards (sandbox.py) refuse those before they start, so every single step
is short. The hook costs about 0.1 µs per traced event; a typical template takes a few hundred.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

# The file name Jinja gives code compiled from a string: the template's own frames.
TEMPLATE_FILENAME = "<template>"


class OutOfBudget(BaseException):
    """Raised by the trace hook. A BaseException so that no ``except Exception`` in Jinja or
    Babel on the way up can swallow it; the renderer turns it into RenderLimitExceeded."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class StepBudget:
    """At most ``max_steps`` steps and ``seconds`` of wall-clock time for one render."""

    __slots__ = ("_deadline", "_left", "max_steps", "seconds")

    def __init__(self, *, max_steps: int, seconds: float) -> None:
        self.max_steps = max_steps
        self.seconds = seconds
        self._left = max_steps
        self._deadline = time.monotonic() + seconds

    @property
    def steps_taken(self) -> int:
        return self.max_steps - self._left

    def _check(self) -> None:
        if self._left < 0:
            raise OutOfBudget(f"the template ran more than {self.max_steps} steps")
        if time.monotonic() > self._deadline:
            raise OutOfBudget(f"the template ran longer than {self.seconds:g} s")

    # The hooks check only every 64th step: a clock read per step would double their cost.
    def _on_line(self, frame: FrameType, event: str, arg: Any) -> Any:
        self._left -= 1
        if not self._left & 63:
            self._check()
        return self._on_line

    def _on_call(self, frame: FrameType, event: str, arg: Any) -> Any:
        # Called for every new frame in this thread (and every resumption of a generator).
        self._left -= 1
        if not self._left & 63:
            self._check()
        if frame.f_code.co_filename == TEMPLATE_FILENAME:
            return self._on_line  # count this frame's lines too
        return None

    @contextmanager
    def running(self) -> Iterator[None]:
        """Trace this thread while the block runs. A raise from the hook unsets it (CPython's
        rule for a failing trace function); the ``finally`` unsets it on every other path."""
        previous = sys.gettrace()
        sys.settrace(self._on_call)
        try:
            yield
        finally:
            sys.settrace(previous)


def untraced(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call trusted code of bounded cost (Babel formatting a value) without the hook: it would
    otherwise cost a Python call per Python call inside it, most of a render's time."""
    tracer = sys.gettrace()
    sys.settrace(None)
    try:
        return function(*args, **kwargs)
    finally:
        sys.settrace(tracer)
