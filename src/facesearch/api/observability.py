"""What the server tells its operator about each request: an access log line and a latency sample.

An ASGI middleware (no request body is read or buffered). The line names the request id
(the caller's ``X-Request-ID`` if it is a plain token, else a new one, echoed back), the user
(set by authentication on ``request.state.user``), the method, the route *template*
(``/api/faces/{face_id}``: never the concrete path or the query string, which may carry
face ids or file names), the status and the duration. Nothing from the body (probe pixels,
uploaded file names) is ever logged here.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facesearch.metrics import REQUEST_SECONDS

access_log = logging.getLogger("facesearch.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if str(scope.get("path", "")).startswith("/static/"):
        return "/static/{path}"
    return "<unmatched>"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500  # if the app raises before answering, the server sends a 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - start
            route = route_template(scope)
            REQUEST_SECONDS.labels(route, scope["method"], str(status)).observe(duration)
            access_log.info("%s %s %d", scope["method"], route, status,
                            extra={"request_id": request_id, "user": state.get("user"), "method": scope["method"],
                                   "route": route, "status": status, "duration_ms": round(duration * 1000, 2)})


def forwarded_chain(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every address a proxy said the request passed through (X-Forwarded-For and Forwarded: for=)."""
    chain = []
    for name, value in headers:
        text = value.decode("latin-1")
        if name == b"x-forwarded-for":
            chain += [part.strip() for part in text.split(",") if part.strip()]
        elif name == b"forwarded":
            for element in re.findall(r'for="?\[?([^;,"\]]+)', text, flags=re.IGNORECASE):
                chain.append(element.rsplit(":", 1)[0] if element.count(":") == 1 else element)
    return chain


def metrics_peer_allowed(settings, scope: Scope) -> bool:
    """May this request read /metrics? The direct peer and every forwarded-for hop must be allowed.

    Why every hop: a reverse proxy on loopback relays outside callers; if only the direct peer
    counted, the world would read the metrics through it. A forged X-Forwarded-For can only
    deny, never grant.
    """
    client = scope.get("client")
    hops = [client[0] if client else None, *forwarded_chain(scope.get("headers") or ())]
    return all(_valid(hop) and settings.metrics_allowed(hop) for hop in hops)


def _valid(address: str | None) -> bool:
    try:
        ipaddress.ip_address(address or "")
        return True
    except ValueError:
        return False
