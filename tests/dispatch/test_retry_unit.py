"""``workers.retry``: the pure retry decision and its backoff schedule (no clock, no database)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.channels.base import (
    DeliveryError,
    NotDeliverable,
    PermanentError,
    ProviderAuthError,
    RecipientOptedOut,
    SubscriptionGone,
    TransientError,
    UnknownOutcomeError,
)
from workers.retry import (
    GiveUp,
    RetryAt,
    RetryPolicy,
    backoff_seconds,
    decide,
    in_process_retrying,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=5, base_seconds=2.0, max_seconds=3600.0)


class Highest(random.Random):
    """Jitter always at its top: the backoff equals its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def run(error: DeliveryError, attempts: int = 1, unknown: int = 0, policy: RetryPolicy = POLICY):
    return decide(
        policy,
        attempts_in_round=attempts,
        unknown_outcomes=unknown,
        error=error,
        now=NOW,
        rng=random.Random(7),
    )


def delay_of(decision: RetryAt | GiveUp) -> float:
    assert isinstance(decision, RetryAt), decision
    return (decision.when - NOW).total_seconds()


def test_transient_retries_with_growing_backoff() -> None:
    delays = [delay_of(run(TransientError("451"), attempts=n)) for n in range(1, 5)]
    ceilings = [2.0, 4.0, 8.0, 16.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert delays[3] > delays[0]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(max_attempts=50, base_seconds=2.0, max_seconds=60.0)
    assert backoff_seconds(policy, 30, Highest()) == 60.0


def test_retry_after_is_a_floor() -> None:
    decision = run(TransientError("429", retry_after=120.0))
    assert delay_of(decision) == 120.0
    # A short Retry-After does not shorten the backoff.
    assert delay_of(run(TransientError("429", retry_after=0.1), attempts=4)) >= 8.0


def test_gives_up_after_max_attempts() -> None:
    decision = run(TransientError("451 busy"), attempts=POLICY.max_attempts)
    assert isinstance(decision, GiveUp) and not decision.skipped
    assert "gave up after 5 attempts" in decision.reason and "451 busy" in decision.reason


@pytest.mark.parametrize(
    "error",
    [PermanentError("550"), SubscriptionGone("410"), RecipientOptedOut("21610")],
)
def test_permanent_errors_give_up_at_once(error: DeliveryError) -> None:
    decision = run(error)
    assert isinstance(decision, GiveUp) and not decision.skipped


def test_unknown_outcome_retried_once() -> None:
    first = run(UnknownOutcomeError("timeout after DATA"), unknown=0)
    assert isinstance(first, RetryAt)
    assert "outcome unknown" in first.reason
    second = run(UnknownOutcomeError("timeout after DATA"), unknown=1)
    assert isinstance(second, GiveUp) and "unknown twice" in second.reason


def test_not_deliverable_is_skipped() -> None:
    decision = run(NotDeliverable("no email address"))
    assert decision == GiveUp("no email address", skipped=True)


def test_provider_auth_error_pauses_even_at_max_attempts() -> None:
    decision = run(ProviderAuthError("535"), attempts=POLICY.max_attempts + 3)
    assert isinstance(decision, RetryAt)
    assert delay_of(decision) == POLICY.pause_seconds
    assert "paused" in decision.reason
    # The breaker acts on this (workers/delivery.py); no other error pauses the channel.
    assert decision.pauses_channel


@pytest.mark.parametrize(
    "error",
    [TransientError("503"), UnknownOutcomeError("timeout"), TransientError("429", retry_after=5)],
)
def test_only_provider_auth_errors_pause_the_channel(error: DeliveryError) -> None:
    decision = run(error)
    assert isinstance(decision, RetryAt) and not decision.pauses_channel


policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(min_value=1, max_value=100),
    base_seconds=st.floats(min_value=0.01, max_value=60.0),
    max_seconds=st.floats(min_value=60.0, max_value=86_400.0),
)


@settings(max_examples=200, deadline=None)
@given(policy=policies, attempt=st.integers(min_value=1, max_value=200), seed=st.integers())
def test_backoff_stays_within_bounds(policy: RetryPolicy, attempt: int, seed: int) -> None:
    delay = backoff_seconds(policy, attempt, random.Random(seed))
    assert delay <= policy.max_seconds
    assert delay >= min(policy.base_seconds, policy.max_seconds) / 2


@settings(max_examples=200, deadline=None)
@given(policy=policies, attempts=st.integers(min_value=1, max_value=60))
def test_backoff_ceiling_never_shrinks(policy: RetryPolicy, attempts: int) -> None:
    ceilings = [backoff_seconds(policy, n, Highest()) for n in range(1, attempts + 1)]
    assert ceilings == sorted(ceilings)


@settings(max_examples=200, deadline=None)
@given(
    policy=policies,
    attempt=st.integers(min_value=1, max_value=99),
    retry_after=st.none() | st.floats(min_value=0.0, max_value=100_000.0),
    seed=st.integers(),
)
def test_decided_retry_respects_retry_after_and_cap(
    policy: RetryPolicy, attempt: int, retry_after: float | None, seed: int
) -> None:
    decision = decide(
        policy,
        attempts_in_round=attempt,
        unknown_outcomes=0,
        error=TransientError("busy", retry_after=retry_after),
        now=NOW,
        rng=random.Random(seed),
    )
    if attempt >= policy.max_attempts:
        assert isinstance(decision, GiveUp)
        return
    delay = delay_of(decision)
    assert delay >= (retry_after or 0.0) - 1e-6
    assert delay <= max(policy.max_seconds, retry_after or 0.0) + 1e-6
    assert decision.when - NOW < timedelta(days=2)


async def test_in_process_retries_only_quick_transients() -> None:
    tries = 0

    async def flaky(error: DeliveryError, failures: int) -> str:
        nonlocal tries
        tries += 1
        if tries <= failures:
            raise error
        return "ok"

    result = None
    async for attempt in in_process_retrying(POLICY, tries_left=5):
        with attempt:
            result = await flaky(TransientError("451"), 2)
    assert (result, tries) == ("ok", 3)

    for error in (
        TransientError("429", retry_after=120.0),  # too long to wait in-process
        ProviderAuthError("535"),
        PermanentError("550"),
    ):
        tries = 0
        with pytest.raises(type(error)):
            async for attempt in in_process_retrying(POLICY, tries_left=5):
                with attempt:
                    await flaky(error, 10)
        assert tries == 1, error

    tries = 0
    with pytest.raises(TransientError):
        async for attempt in in_process_retrying(POLICY, tries_left=2):  # the budget left
            with attempt:
                await flaky(TransientError("451"), 10)
    assert tries == 2
