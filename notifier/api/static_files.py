"""The files of the pages the API serves (`/inbox`, `/admin`, `/docs`), read once from the
package's `static/` folder, with the headers every one of them carries (docs/architecture.md,
"HTTP API")."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

from fastapi import Response

from notifier.api.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"

# No sniffing, no referrer to other sites, and a page that changes with each release.
PAGE_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def read_static(relative: str) -> bytes:
    """A file under ``static/`` (only names from the callers' own tables reach here)."""
    return (STATIC_DIR / relative).read_bytes()


# A page's assets: the name in its URL -> (its path under ``static/``, its media type).
Assets = Mapping[str, tuple[str, str]]


def static_response(
    assets: Assets, name: str, *, what: str, headers: Mapping[str, str]
) -> Response:
    """``name`` from ``assets``, or a 404 naming ``what``: a name outside the table never
    touches the file system."""
    asset = assets.get(name)
    if asset is None:
        raise NotFound(f"no such {what}")
    path, media_type = asset
    return Response(read_static(path), media_type=media_type, headers=dict(headers))
