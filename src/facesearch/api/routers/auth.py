"""Logging in and out, and one's own account: who am I, my password, my API keys."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from facesearch.api import schemas
from facesearch.api.deps import SESSION_COOKIE, Anyone, Ctx
from facesearch.api.proxies import request_client
from facesearch.governance.audit import bounded_text

router = APIRouter(tags=["auth"])


@router.post("/api/login", response_model=schemas.LoginResponse,
             responses={429: {"description": "too many failed attempts: wait Retry-After seconds"}})
def login(body: schemas.LoginRequest, request: Request, response: Response, ctx: Ctx) -> schemas.LoginResponse:
    """Throttled per (username, client) with growing delays and per client; the client is the
    TCP peer unless that is a trusted proxy (``--trusted-proxy``). Audited under the submitted
    username, folded to a bounded length."""
    gov, throttle = ctx.gov, ctx.throttle
    client, peer = request_client(request, ctx.proxies)
    where = {"client": client} | ({"proxy": peer} if peer != client else {})
    name = bounded_text(body.username)
    wait = throttle.wait_s(body.username, client)
    if wait > 0:
        if throttle.first_refusal(body.username, client):  # one record per blocking period
            gov.audit.append(name, "login_throttled", {**where, "retry_after_s": round(wait)})
        raise HTTPException(429, "too many failed login attempts: try again later",
                            headers={"Retry-After": str(int(wait) + 1)})
    user = gov.accounts.check_password(body.username, body.password)
    gov.audit.append(name, "login", {"ok": user is not None, **where})
    if user is None:
        throttle.failed(body.username, client)
        raise HTTPException(401, "wrong username or password")
    throttle.succeeded(body.username, client)
    token, csrf = gov.accounts.create_session(user)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=ctx.secure_cookies,
                        max_age=12 * 3600, path="/")
    return schemas.LoginResponse(username=user.username, role=user.role, csrf_token=csrf)


@router.post("/api/logout")
def logout(who: Anyone, request: Request, response: Response, ctx: Ctx) -> dict:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        ctx.gov.accounts.end_session(token)
    response.delete_cookie(SESSION_COOKIE, path="/")
    ctx.gov.audit.append(who.user.username, "logout")
    return {"ok": True}


@router.get("/api/me", response_model=schemas.Me)
def me(who: Anyone, ctx: Ctx) -> schemas.Me:
    return schemas.Me(username=who.user.username, role=who.user.role,
                      collections=ctx.gov.accounts.granted_collections(who.user), csrf_token=who.csrf)


@router.post("/api/me/password")
def change_own_password(body: schemas.PasswordChange, who: Anyone, ctx: Ctx) -> dict:
    ctx.lifecycle.change_own_password(who.user, body.current_password, body.new_password)
    return {"ok": True}


@router.get("/api/me/api-keys", response_model=list[schemas.ApiKeyInfoOut])
def my_api_keys(who: Anyone, ctx: Ctx) -> list[schemas.ApiKeyInfoOut]:
    return [schemas.ApiKeyInfoOut(**k.__dict__) for k in ctx.lifecycle.api_keys(who.user)]


@router.post("/api/me/api-keys", response_model=schemas.ApiKeyOut, status_code=201)
def new_own_api_key(who: Anyone, ctx: Ctx, body: schemas.NewApiKey | None = None) -> schemas.ApiKeyOut:
    key_id, secret = ctx.lifecycle.issue_api_key(who.user, label=body.label if body else "")
    return schemas.ApiKeyOut(api_key=secret, id=key_id)
