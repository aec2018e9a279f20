"""``runtime.roles.freeze_what_lives_forever``: what lives so far leaves the cyclic collector's
sight, and a worker's young generation is collected every ``WORKER_YOUNG_THRESHOLD``
allocations (bench/RESULTS.md "Webhook idle flush and collector A/B"); without a threshold the
collector's own is kept, as the API's is."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from runtime.roles import WORKER_YOUNG_THRESHOLD, freeze_what_lives_forever


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@pytest.mark.usefixtures("collector")
def test_a_worker_collects_its_young_generation_less_often() -> None:
    older = gc.get_threshold()[1:]
    freeze_what_lives_forever(young_threshold=WORKER_YOUNG_THRESHOLD)
    assert gc.get_threshold() == (WORKER_YOUNG_THRESHOLD, *older)
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("collector")
def test_without_a_threshold_the_collector_keeps_its_own() -> None:
    before = gc.get_threshold()
    freeze_what_lives_forever()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() > 0
