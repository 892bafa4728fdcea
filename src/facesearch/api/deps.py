"""What a route depends on: the server's parts (:class:`ServerContext`), the current user
(:func:`current_actor`: session cookie + CSRF header, or an API key) and the permission the
route needs (:func:`permitted`, checked against governance's one table before the request body
is read, so a caller without the role gets 403 whatever it sends).

Routers declare ``who: Searcher`` (or ``Admin``, ``Auditor``, ...) and ``ctx: Ctx``; nothing
here is a closure, so each router lives in its own module (:mod:`facesearch.api.routers`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from facesearch.api.jobs import JobRunner
from facesearch.api.limits import ServerLimits
from facesearch.api.proxies import TrustedProxies
from facesearch.api.workers import CpuPool
from facesearch.governance import Governance, UserInfo, policy
from facesearch.governance.accounts import LoginThrottle
from facesearch.governance.clusters import ClusterGovernance
from facesearch.governance.lifecycle import AccountLifecycle
from facesearch.governance.policy import Action
from facesearch.governance.subjects import SubjectGovernance
from facesearch.readiness import ModelCheck
from facesearch.services.engine import Engine
from facesearch.settings import Settings

SESSION_COOKIE = "fs_session"


@dataclass(frozen=True)
class Actor:
    """The user a request acts as, and how it proved it."""

    user: UserInfo
    via: str  # "session" | "api_key"
    csrf: str | None = None


@dataclass
class ServerContext:
    """Everything the routes use, built once by ``create_app`` and kept on ``app.state.context``."""

    gov: Governance
    lifecycle: AccountLifecycle
    subjects: SubjectGovernance
    clusters: ClusterGovernance
    settings: Settings
    limits: ServerLimits
    cpu: CpuPool
    jobs: JobRunner
    throttle: LoginThrottle
    proxies: TrustedProxies
    secure_cookies: bool = False
    checkpoint_export: list[str] | None = None
    models_check: ModelCheck = field(default_factory=ModelCheck)

    @property
    def engine(self) -> Engine:
        return self.gov.engine


def server_context(request: Request) -> ServerContext:
    return request.app.state.context


Ctx = Annotated[ServerContext, Depends(server_context)]


def _cpu(ctx: Ctx) -> CpuPool:
    return ctx.cpu


def _subjects(ctx: Ctx) -> SubjectGovernance:
    return ctx.subjects


def _clusters(ctx: Ctx) -> ClusterGovernance:
    return ctx.clusters


#: the bounded pool every look at pixels or a model runs on
Cpu = Annotated[CpuPool, Depends(_cpu)]
Subjects = Annotated[SubjectGovernance, Depends(_subjects)]
Clusters = Annotated[ClusterGovernance, Depends(_clusters)]


def current_actor(request: Request, ctx: Ctx) -> Actor:
    """The user of an API key (``X-API-Key`` or ``Authorization: Bearer``) or of a session cookie;
    a session's state-changing request must carry its CSRF token."""
    accounts = ctx.gov.accounts
    auth = request.headers.get("authorization", "")
    key = request.headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else "")
    if key:
        user = accounts.user_for_api_key(key)
        if user is None:
            raise HTTPException(401, "invalid or revoked API key")
        request.state.user = user.username  # for the access log
        return Actor(user, "api_key")
    token = request.cookies.get(SESSION_COOKIE)
    found = accounts.session_user(token) if token else None
    if found is None:
        raise HTTPException(401, "log in first (session cookie or API key required)")
    user, csrf = found
    request.state.user = user.username  # for the access log
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.headers.get("x-csrf-token", "")
        if not secrets.compare_digest(sent.encode(), csrf.encode()):
            raise HTTPException(403, "missing or wrong CSRF token (X-CSRF-Token header)")
    return Actor(user, "session", csrf)


def permitted(action: Action) -> Callable[[Actor], Actor]:
    """A dependency: the current actor, if governance's table lets its role take ``action`` (else 403)."""

    def check(who: Annotated[Actor, Depends(current_actor)]) -> Actor:
        try:
            policy.check(who.user.username, who.user.role, action)
        except policy.PermissionDenied as exc:
            raise HTTPException(403, str(exc)) from None
        return who

    return check


Anyone = Annotated[Actor, Depends(permitted(Action.OWN_ACCOUNT))]
Searcher = Annotated[Actor, Depends(permitted(Action.SEARCH))]
CollectionReader = Annotated[Actor, Depends(permitted(Action.VIEW_COLLECTIONS))]
SubjectMember = Annotated[Actor, Depends(permitted(Action.SUBJECTS))]
ClusterMember = Annotated[Actor, Depends(permitted(Action.CLUSTERS))]
UserAdmin = Annotated[Actor, Depends(permitted(Action.MANAGE_USERS))]
CollectionAdmin = Annotated[Actor, Depends(permitted(Action.MANAGE_COLLECTIONS))]
Eraser = Annotated[Actor, Depends(permitted(Action.ERASE))]
Auditor = Annotated[Actor, Depends(permitted(Action.READ_AUDIT))]
