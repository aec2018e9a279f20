"""``GET /docs``: Swagger UI for the OpenAPI document, with nothing loaded from elsewhere.

FastAPI's own page loads Swagger UI from a CDN: offline, or behind a firewall, it was blank. Its
assets are vendored here instead (``static/vendor/swagger-ui``: swagger-ui-dist 5.35.0 from
``npm pack swagger-ui-dist@5``, Apache-2.0, with its LICENSE and NOTICE and the bundle's own
licence file) and served under ``/docs/assets/``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from notifier.api.static_files import STATIC_DIR, Assets, static_response

router = APIRouter(include_in_schema=False)

ASSETS_PATH = "/docs/assets"
_VENDOR = "vendor/swagger-ui/"
VENDOR_DIR = STATIC_DIR / _VENDOR  # with its LICENSE and NOTICE
_ASSETS: Assets = {
    "swagger-ui-bundle.js": (_VENDOR + "swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": (_VENDOR + "swagger-ui.css", "text/css; charset=utf-8"),
    "favicon-32x32.png": (_VENDOR + "favicon-32x32.png", "image/png"),
}
# A release's vendored files do not change: cached for an hour.
_HEADERS = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}


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
    return static_response(_ASSETS, name, what="documentation asset", headers=_HEADERS)
