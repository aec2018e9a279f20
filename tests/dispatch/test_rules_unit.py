"""``workers.rules.quiet_window_end``: same-day and overnight windows, read in the recipient's
zone, across DST changes."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.rules import quiet_window_end

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")


def at(zone: zoneinfo.ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("clock", "expected_end"),
    [
        ((12, 0), (14, 0)),  # start is inside
        ((13, 59), (14, 0)),
        ((11, 59), None),
        ((14, 0), None),  # end is outside
        ((20, 0), None),
    ],
)
def test_same_day_window(clock: tuple[int, int], expected_end: tuple[int, int] | None) -> None:
    end = quiet_window_end(at(TOKYO, 2030, 5, 1, *clock), "12:00", "14:00")
    if expected_end is None:
        assert end is None
    else:
        assert end == at(TOKYO, 2030, 5, 1, *expected_end)


@pytest.mark.parametrize(
    ("day", "clock", "expected"),
    [
        (1, (22, 0), (2, 7, 0)),  # evening: ends tomorrow morning
        (1, (23, 59), (2, 7, 0)),
        (1, (0, 0), (1, 7, 0)),  # after midnight: ends this morning
        (1, (6, 59), (1, 7, 0)),
        (1, (7, 0), None),
        (1, (21, 59), None),
        (1, (12, 0), None),
    ],
)
def test_window_across_midnight(
    day: int, clock: tuple[int, int], expected: tuple[int, int, int] | None
) -> None:
    end = quiet_window_end(at(TOKYO, 2030, 5, day, *clock), "22:00", "07:00")
    if expected is None:
        assert end is None
    else:
        assert end == at(TOKYO, 2030, 5, *expected)


def test_empty_window() -> None:
    assert quiet_window_end(at(TOKYO, 2030, 5, 1, 9, 0), "09:00", "09:00") is None


def test_overnight_window_across_spring_forward() -> None:
    # Berlin, 2030-03-31: 02:00 CET becomes 03:00 CEST; the night is an hour shorter.
    now = at(BERLIN, 2030, 3, 30, 23, 0)
    end = quiet_window_end(now, "22:00", "07:00")
    assert end is not None
    assert end.astimezone(UTC) == datetime(2030, 3, 31, 5, 0, tzinfo=UTC)  # 07:00 CEST
    assert end.astimezone(UTC) - now.astimezone(UTC) == timedelta(hours=7)


def test_window_across_fall_back() -> None:
    # Berlin, 2030-10-27: 03:00 CEST becomes 02:00 CET; the night is an hour longer.
    now = at(BERLIN, 2030, 10, 26, 23, 0)
    end = quiet_window_end(now, "22:00", "07:00")
    assert end is not None
    assert end.astimezone(UTC) == datetime(2030, 10, 27, 6, 0, tzinfo=UTC)  # 07:00 CET
    assert end.astimezone(UTC) - now.astimezone(UTC) == timedelta(hours=9)


def test_end_in_the_repeated_hour_is_never_in_the_past() -> None:
    # 02:15 for the second time (CET, fold=1), window until 02:30: it ends at 02:30 CET, a
    # quarter of an hour ahead, not at 02:30 CEST, which was 45 minutes ago.
    now = at(BERLIN, 2030, 10, 27, 2, 15, fold=1)
    end = quiet_window_end(now, "01:00", "02:30")
    assert end is not None
    assert end.astimezone(UTC) - now.astimezone(UTC) == timedelta(minutes=15)


def test_end_in_the_skipped_hour_lies_ahead() -> None:
    now = at(BERLIN, 2030, 3, 31, 1, 50)  # CET; 02:00-03:00 does not exist that night
    end = quiet_window_end(now, "22:00", "02:30")
    assert end is not None
    assert now.astimezone(UTC) < end.astimezone(UTC) <= now.astimezone(UTC) + timedelta(hours=2)


zones = st.sampled_from(
    ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
)
hhmm = st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda t: f"{t[0]:02d}:{t[1]:02d}")


@settings(max_examples=300, deadline=None)
@given(
    zone=zones,
    instant=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    ),
    start=hhmm,
    end=hhmm,
)
def test_window_end_lies_ahead_within_a_day(
    zone: str, instant: datetime, start: str, end: str
) -> None:
    local_now = instant.astimezone(zoneinfo.ZoneInfo(zone))
    window_end = quiet_window_end(local_now, start, end)
    if window_end is None:
        return
    ahead = window_end.astimezone(UTC) - instant
    assert timedelta(0) < ahead <= timedelta(hours=25)
