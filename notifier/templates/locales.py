"""Locale tags: which ones we accept, their canonical spelling, and the fallback chain.

A template's locales are keyed by BCP 47 tags (``en``, ``fr-BE``, ``zh-CN``, ``zh-Hant-TW``),
stored in canonical case (language lower, script title, region upper). A tag is usable when it
has that shape and Babel has data for it; ``_`` is read as ``-`` (``zh_CN``, as some clients
and the recipients table spell it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from babel import Locale, UnknownLocaleError

# language[-script][-region][-variant...]: the subset of BCP 47 that names a locale (no
# extensions, no private use). 35 characters: the recipients column, and RFC 5646's advice.
_TAG = re.compile(
    r"^(?P<language>[A-Za-z]{2,3})"
    r"(?:-(?P<script>[A-Za-z]{4}))?"
    r"(?:-(?P<region>[A-Za-z]{2}|[0-9]{3}))?"
    r"(?P<variants>(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*)$"
)
MAX_TAG_CHARS = 35


class UnusableLocale(ValueError):
    """Not a BCP 47 language tag that Babel knows (e.g. en, fr-BE, zh-CN)."""


@lru_cache(maxsize=512)
def canonical_tag(tag: str) -> str:
    """``tag`` in canonical case (``EN-us`` → ``en-US``), or ``UnusableLocale``."""
    spelled = tag.replace("_", "-")
    match = _TAG.match(spelled) if len(spelled) <= MAX_TAG_CHARS else None
    if match is None or match["language"].lower() == "und":
        raise UnusableLocale(f"{tag!r} is not a BCP 47 language tag such as en, fr-BE or zh-CN")
    parts = [match["language"].lower()]
    if match["script"]:
        parts.append(match["script"].title())
    if match["region"]:
        parts.append(match["region"].upper())
    parts += [v.lower() for v in match["variants"].split("-") if v]
    canonical = "-".join(parts)
    babel_locale(canonical)  # raises UnusableLocale when Babel has no data for it
    return canonical


@lru_cache(maxsize=512)
def babel_locale(tag: str) -> Locale:
    """Babel's locale for a tag (``zh-CN`` → ``zh_Hans_CN``), or ``UnusableLocale``."""
    try:
        return Locale.parse(tag.replace("_", "-"), sep="-")
    except (UnknownLocaleError, ValueError) as exc:
        raise UnusableLocale(f"{tag!r} is not a locale Babel knows") from exc


def usable_tag(tag: str | None) -> str | None:
    """The canonical tag, or None when ``tag`` is missing or unusable (a recipient's stored
    locale: the renderer falls back to the template's default rather than refusing)."""
    if not tag:
        return None
    try:
        return canonical_tag(tag)
    except UnusableLocale:
        return None


def fallback_chain(tag: str) -> list[str]:
    """``zh-Hant-TW`` → ``[zh-Hant-TW, zh-Hant, zh]``: the tag, then each shorter prefix."""
    parts = tag.split("-")
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]


def resolve_locale(wanted: str | None, available: Iterable[str], default_locale: str) -> str:
    """The template locale to render: ``wanted`` (canonical) through its fallback chain
    (``fr-BE`` → ``fr``), else the template's ``default_locale``. A step of the chain matches a
    key spelled the same, or one that names the same locale to Babel (``zh-Hans-CN`` is
    ``zh-CN``: Chinese in China is written in simplified characters)."""
    if wanted is None:
        return default_locale
    return _resolved(wanted, tuple(available), default_locale)


@lru_cache(maxsize=4096)
def _resolved(wanted: str, keys: tuple[str, ...], default_locale: str) -> str:
    # Cached: every render of a template asks the same question of the same keys, and the
    # Babel identities below were a seventh of a small render's time.
    by_spelling = {key.lower(): key for key in keys}
    by_identity: dict[str, str] = {}
    for key in keys:
        identity = _identity(key)
        if identity is not None:
            by_identity.setdefault(identity, key)
    for candidate in fallback_chain(wanted):
        found = by_spelling.get(candidate.lower())
        if found is None:
            identity = _identity(candidate)
            found = by_identity.get(identity) if identity is not None else None
        if found is not None:
            return found
    return default_locale


def _identity(tag: str) -> str | None:
    try:
        return str(babel_locale(tag))
    except UnusableLocale:
        return None
