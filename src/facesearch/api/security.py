"""The web surface's own defences: security headers on every response, no cross-site requests to
the API, and the API docs served from installed assets (no CDN).

- ``Content-Security-Policy``: scripts and styles only from this origin (no inline script, no
  ``on*=`` handler: the templates load ``/static/*.js``), images from this origin (plus ``blob:``
  for the probe preview), no framing (``frame-ancestors 'none'``), no plugins, forms and
  fetches to this origin only. ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  no-referrer`` (a face URL's view grant never leaves in a Referer header),
  ``X-Frame-Options: DENY`` for old browsers, ``Cross-Origin-Opener-Policy: same-origin``.
- A browser request to ``/api`` that another site made (``Sec-Fetch-Site: cross-site`` or
  ``same-site``) is refused before any route runs, so an ``<img>``, a form or a script on
  another site can neither read nor record anything in a user's name. The session cookie is
  ``SameSite=Strict`` too; clients that are not browsers send no ``Sec-Fetch-Site`` and are not
  affected.
- ``/docs`` is Swagger UI from the ``fastapi-offline`` package's files, started by
  ``/static/docs.js``: nothing is loaded from another host, and no inline script is needed.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
# Swagger UI sets style attributes from its own (local) script: only /docs allows inline style.
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
           "Cross-Origin-Opener-Policy": "same-origin"}
CROSS_SITE = ("cross-site", "same-site")
DOCS_ASSETS = "/static-docs"


def add_security(app: FastAPI) -> None:
    """Install the headers, the cross-site guard and the offline docs on ``app`` (created with
    ``docs_url=None, redoc_url=None``)."""

    @app.middleware("http")
    async def guard_and_headers(request: Request, call_next) -> Response:
        site = request.headers.get("sec-fetch-site", "")
        if request.url.path.startswith("/api/") and site in CROSS_SITE:
            response: Response = JSONResponse({"detail": "cross-site requests to the API are refused"},
                                              status_code=403)
        else:
            response = await call_next(request)
        docs = request.url.path in ("/docs", "/redoc") or request.url.path.startswith(DOCS_ASSETS)
        response.headers["Content-Security-Policy"] = DOCS_CSP if docs else CSP
        for name, value in HEADERS.items():
            response.headers[name] = value
        return response

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="static-docs")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        title = escape(f"{app.title} - API")
        return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css">
<link rel="icon" href="{DOCS_ASSETS}/favicon.png"></head>
<body><div id="swagger-ui" data-openapi-url="{escape(app.openapi_url or '/openapi.json')}"></div>
<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script></body></html>""")
