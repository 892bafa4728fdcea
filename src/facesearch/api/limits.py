"""Request limits enforced before any route runs: total body size and slow bodies.

A pure ASGI middleware (no buffering of its own): a declared ``Content-Length`` over the
limit is refused at once with 413; a body that streams past the limit is cut off with
413; a client that stalls for ``body_timeout_s`` between two chunks of its body gets 408,
so a slow client cannot hold a connection and a request slot open forever.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facesearch.settings import under_any_root


class BodyTooLarge(HTTPException):
    """Raised inside the app (FastAPI lets HTTPExceptions from body reading through as they are)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit:,} bytes")


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"request body stalled for more than {seconds:.0f} s")


class RequestLimits:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float) -> None:
        if max_body_bytes < 1 or body_timeout_s <= 0:
            raise ValueError("max_body_bytes >= 1 and body_timeout_s > 0 are required")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                await _answer(send, 400, "invalid Content-Length")
                return
            if too_big:
                await _answer(send, 413, f"request body larger than {self.max_body_bytes:,} bytes")
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except TimeoutError:
                raise BodyTimeout(self.body_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (BodyTooLarge, BodyTimeout) as exc:  # read outside a route: answered here
            if not started:
                await _answer(send, exc.status_code, str(exc.detail))


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class ServerLimits:
    """How much the server takes on at once, and from where it may ingest folders."""

    cpu_workers: int = 2  # photo/model jobs running at once
    cpu_queue: int = 8  # jobs waiting beyond those; more is answered 503 + Retry-After
    request_time_limit_s: float = 120.0
    max_body_bytes: int = 256 * 1024 * 1024  # as settings.max_request_bytes: a full upload batch and more
    body_timeout_s: float = 30.0  # longest pause between two chunks of a request body
    ingest_roots: tuple[Path, ...] = ()  # folders an admin may ingest from (none: folder ingest is off)

    def __post_init__(self) -> None:
        problems = [name for name, ok in (
            ("cpu_workers (1..64)", 1 <= self.cpu_workers <= 64),
            ("cpu_queue (0..10000)", 0 <= self.cpu_queue <= 10_000),
            ("request_time_limit_s (> 0)", self.request_time_limit_s > 0),
            ("max_body_bytes (>= 1 MB)", self.max_body_bytes >= 1 << 20),
            ("body_timeout_s (> 0)", self.body_timeout_s > 0)) if not ok]
        if problems:
            raise ValueError("invalid server limits: " + ", ".join(problems))

    @classmethod
    def from_settings(cls, settings) -> ServerLimits:
        """The limits of a :class:`facesearch.settings.Settings` (where they are validated and documented)."""
        return cls(cpu_workers=settings.workers, cpu_queue=settings.worker_queue,
                   max_body_bytes=settings.max_request_bytes, ingest_roots=tuple(settings.ingest_roots))

    def allowed_ingest_folder(self, raw: str, home: Path) -> Path:
        """``raw`` resolved, if it is a folder under an allowed root and outside the home; else 400/403."""
        folder = Path(raw).expanduser()
        if not folder.is_absolute():
            raise HTTPException(400, "give the folder as an absolute path on the server")
        real = folder.resolve()
        if not self.ingest_roots:
            raise HTTPException(403, "folder ingest is off: the operator allows folders with "
                                     "FACESEARCH_INGEST_ROOTS (or serve --ingest-root DIR)")
        if not under_any_root(real, self.ingest_roots):
            raise HTTPException(403, f"{folder} is not under an allowed ingest root")
        home_real = Path(home).resolve()
        if real.is_relative_to(home_real) or home_real.is_relative_to(real):
            raise HTTPException(403, "a folder that holds facesearch's own home cannot be ingested")
        if not real.is_dir():
            raise HTTPException(400, f"{folder}: not a folder on the server")
        return real
