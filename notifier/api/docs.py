"""``GET /docs``: Swagger UI for the OpenAPI document, with nothing loaded from elsewhere.

FastAPI's own page loads Swagger UI from a CDN: offline, or behind a firewall, it was blank. Its
assets are vendored here instead (``static/vendor/swagger-ui``: swagger-ui-dist 5.35.0 from
``npm pack swagger-ui-dist@5``, Apache-2.0, with its LICENSE and NOTICE and the bundle's own
licence file) and served under ``/docs/assets/``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from notifier.api.errors import NotFound

router = APIRouter(include_in_schema=False)

VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor" / "swagger-ui"
ASSETS_PATH = "/docs/assets"
_ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


@cache
def _read(name: str) -> bytes:
    return (VENDOR_DIR / name).read_bytes()


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="notifier API",
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
        # No badge that would ask swagger.io to validate the document.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get(ASSETS_PATH + "/{name}")
async def swagger_ui_asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound("no such documentation asset")
    return Response(
        _read(name),
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
