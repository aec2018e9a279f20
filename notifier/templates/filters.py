"""Locale-aware filters, backed by Babel, in the resolved locale and the recipient's time zone.

    {{ data.due|datetime }}            medium date and time: "Jan 31, 2026, 9:30:00 AM"
    {{ data.due|datetime("short") }}   short|medium|long|full, or a CLDR pattern ("yyyy-MM-dd")
    {{ data.due|date("long") }}        the date alone, in the recipient's time zone
    {{ data.amount|number }}           grouping and decimals of the locale: "1,234.5" / "1 234,5"
    {{ data.ratio|percent }}           0.25 → "25%"
    {{ task.duration_seconds|duration }}  seconds → "2 minutes" / "2分钟"

Dates and times may be ISO 8601 strings (what JSON data carries; no offset means UTC),
datetimes or Unix seconds. Each filter is marked ``pass_context``, which keeps Jinja from
evaluating it once at compile time: its output depends on who the render is for. Babel runs
outside the render's trace hook (budget.py): it is trusted, and its work is bounded by the
value and a pattern of at most 64 characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from babel.dates import format_date, format_datetime, format_timedelta
from babel.numbers import format_decimal, format_percent
from jinja2.runtime import Context
from jinja2.utils import pass_context

from notifier.templates.budget import untraced
from notifier.templates.scope import current_scope

_NAMED_FORMATS = ("short", "medium", "long", "full")
_CALENDAR_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_MAX_PATTERN_CHARS = 64  # a CLDR pattern longer than this is not a date format


class FilterInputError(ValueError):
    """A filter got a value it cannot format."""


def _pattern(value: object, *, named: tuple[str, ...] = _NAMED_FORMATS) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_PATTERN_CHARS:
        raise FilterInputError(
            f"a format is one of {', '.join(named)} or a CLDR pattern of at most "
            f"{_MAX_PATTERN_CHARS} characters"
        )
    return value


def _moment(value: object) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise FilterInputError(f"{value!r} is out of range for a time") from exc
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise FilterInputError(f"expected an ISO 8601 date-time, got {value[:64]!r}") from None
    else:
        raise FilterInputError(f"expected a date-time, got {type(value).__name__}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _number(value: object) -> int | float | Decimal:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            pass
    raise FilterInputError(f"expected a number, got {str(value)[:64]!r}")


@pass_context
def datetime_filter(_: Context, value: object, format: object = "medium") -> str:
    scope = current_scope()
    return untraced(
        format_datetime,
        _moment(value),
        _pattern(format),
        tzinfo=scope.timezone,
        locale=scope.locale,
    )


@pass_context
def date_filter(_: Context, value: object, format: object = "medium") -> str:
    scope = current_scope()
    pattern = _pattern(format)
    if isinstance(value, date) and not isinstance(value, datetime):
        day = value
    elif isinstance(value, str) and _CALENDAR_DATE.match(value):
        day = date.fromisoformat(value)  # a calendar date: no time zone to move it across
    else:
        day = _moment(value).astimezone(scope.timezone).date()
    return untraced(format_date, day, pattern, locale=scope.locale)


@pass_context
def number_filter(_: Context, value: object, format: object = None) -> str:
    pattern = None if format is None else _pattern(format, named=("a CLDR pattern",))
    return untraced(format_decimal, _number(value), pattern, locale=current_scope().locale)


@pass_context
def percent_filter(_: Context, value: object, format: object = None) -> str:
    pattern = None if format is None else _pattern(format, named=("a CLDR pattern",))
    return untraced(format_percent, _number(value), pattern, locale=current_scope().locale)


@pass_context
def duration_filter(_: Context, value: object, format: object = "long") -> str:
    if format not in ("long", "short", "narrow"):
        raise FilterInputError("a duration format is long, short or narrow")
    seconds = _number(value)
    try:
        delta = timedelta(seconds=float(seconds))
    except OverflowError as exc:
        raise FilterInputError(f"{value!r} seconds is out of range") from exc
    return untraced(format_timedelta, delta, format=format, locale=current_scope().locale)


LOCALE_FILTERS: dict[str, Callable[..., Any]] = {
    "datetime": datetime_filter,
    "date": date_filter,
    "number": number_filter,
    "percent": percent_filter,
    "duration": duration_filter,
}
