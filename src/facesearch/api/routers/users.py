"""Users, roles, passwords and API keys of others (admin); every change goes through
:class:`~facesearch.governance.lifecycle.AccountLifecycle` (checked and audited there)."""

from __future__ import annotations

from fastapi import APIRouter

from facesearch.api import schemas
from facesearch.api.deps import Ctx, ServerContext, UserAdmin
from facesearch.governance import UserInfo

router = APIRouter(tags=["users"])


def user_out(ctx: ServerContext, user: UserInfo) -> schemas.UserOut:
    return schemas.UserOut(**user.__dict__, grants=ctx.gov.accounts.grants_of(user.username))


@router.get("/api/users", response_model=list[schemas.UserOut])
def list_users(who: UserAdmin, ctx: Ctx) -> list[schemas.UserOut]:
    return [user_out(ctx, u) for u in ctx.gov.accounts.users()]


@router.post("/api/users", response_model=schemas.UserOut, status_code=201)
def add_user(body: schemas.NewUser, who: UserAdmin, ctx: Ctx) -> schemas.UserOut:
    return user_out(ctx, ctx.lifecycle.add_user(who.user, body.username, body.password, body.role))


@router.post("/api/users/{username}/deactivate", response_model=schemas.UserOut)
def deactivate_user(username: str, who: UserAdmin, ctx: Ctx) -> schemas.UserOut:
    return user_out(ctx, ctx.lifecycle.deactivate(who.user, username))


@router.post("/api/users/{username}/reactivate", response_model=schemas.UserOut)
def reactivate_user(username: str, who: UserAdmin, ctx: Ctx) -> schemas.UserOut:
    return user_out(ctx, ctx.lifecycle.reactivate(who.user, username))


@router.post("/api/users/{username}/role", response_model=schemas.UserOut)
def change_role(username: str, body: schemas.RoleChange, who: UserAdmin, ctx: Ctx) -> schemas.UserOut:
    return user_out(ctx, ctx.lifecycle.set_role(who.user, username, body.role))


@router.post("/api/users/{username}/password")
def reset_password(username: str, body: schemas.PasswordReset, who: UserAdmin, ctx: Ctx) -> dict:
    """Set a user's password (their sessions end). Recorded as this admin's reset."""
    ctx.lifecycle.reset_password(who.user, username, body.password)
    return {"ok": True}


@router.post("/api/users/{username}/api-keys", response_model=schemas.ApiKeyOut, status_code=201)
def new_api_key(username: str, who: UserAdmin, ctx: Ctx) -> schemas.ApiKeyOut:
    """Only for oneself: a key for another user would let the admin act as them (refused, 403)."""
    key_id, secret = ctx.lifecycle.issue_api_key(who.user, username, label=f"issued by {who.user.username}")
    return schemas.ApiKeyOut(api_key=secret, id=key_id)


@router.get("/api/users/{username}/api-keys", response_model=list[schemas.ApiKeyInfoOut])
def list_api_keys(username: str, who: UserAdmin, ctx: Ctx) -> list[schemas.ApiKeyInfoOut]:
    return [schemas.ApiKeyInfoOut(**k.__dict__) for k in ctx.lifecycle.api_keys(who.user, username)]


@router.delete("/api/users/{username}/api-keys/{key_id}", response_model=schemas.ApiKeyInfoOut)
def revoke_api_key(username: str, key_id: int, who: UserAdmin, ctx: Ctx) -> schemas.ApiKeyInfoOut:
    return schemas.ApiKeyInfoOut(**ctx.lifecycle.revoke_api_key(who.user, key_id, username).__dict__)
