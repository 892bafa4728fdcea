"""Account lifecycle: every change to users, roles, passwords, grants and API keys, with its audit
record. The API's user routes, the admin page and the ``facesearch user`` commands all come here.

Rules kept here (one home):

- only admins manage other users; everybody may change their own password and issue, list and
  revoke their own API keys;
- **nobody mints an API key for someone else**: a key acts as its owner, so an admin minting one
  for a user could act as that user with nothing in the log but the user's name. It is refused
  (and the refusal recorded). An admin who resets a user's password is recorded doing so, and
  every session of that user ends;
- the last active admin cannot be deactivated or demoted (nobody could administer the home).
"""

from __future__ import annotations

from facesearch.catalog.store import CatalogError
from facesearch.governance.accounts import AccountError, Accounts, ApiKeyInfo, UserInfo
from facesearch.governance.audit import AuditLog
from facesearch.governance.policy import ADMIN, INVESTIGATOR, Action, may


class LifecycleDenied(AccountError):
    """Not allowed to this actor (mapped to 403 by the API)."""


class AccountLifecycle:
    def __init__(self, accounts: Accounts, audit: AuditLog, engine) -> None:
        self.accounts, self.audit, self.engine = accounts, audit, engine

    @staticmethod
    def _admin(actor: UserInfo) -> None:
        if not may(actor.role, Action.MANAGE_USERS):  # governance's one table
            raise LifecycleDenied(f"{actor.username} ({actor.role}) may not manage users; needs admin")

    def _keep_an_admin(self, username: str) -> None:
        user = self.accounts.user(username)
        if user.role == ADMIN and user.active and self.accounts.count_admins() <= 1:
            raise AccountError(f"{username} is the last active admin: add another admin first")

    # -- users (admin) -----------------------------------------------------------------------------

    def add_user(self, actor: UserInfo, username: str, password: str, role: str) -> UserInfo:
        self._admin(actor)
        user = self.accounts.add_user(username, password, role)
        self.audit.append(actor.username, "user_add", {"username": user.username, "role": user.role})
        return user

    def deactivate(self, actor: UserInfo, username: str) -> UserInfo:
        self._admin(actor)
        self._keep_an_admin(username)
        user = self.accounts.set_active(username, False)
        self.audit.append(actor.username, "user_deactivate", {"username": username})
        return user

    def reactivate(self, actor: UserInfo, username: str) -> UserInfo:
        self._admin(actor)
        user = self.accounts.set_active(username, True)
        self.audit.append(actor.username, "user_reactivate", {"username": username})
        return user

    def set_role(self, actor: UserInfo, username: str, role: str) -> UserInfo:
        self._admin(actor)
        before = self.accounts.user(username)
        if before.role == ADMIN and role != ADMIN:
            self._keep_an_admin(username)
        dropped = self.accounts.grants_of(username) if before.role == INVESTIGATOR and role != before.role else []
        user = self.accounts.set_role(username, role)
        self.audit.append(actor.username, "user_role", {"username": username, "from": before.role, "to": role,
                                                        "grants_dropped": dropped})
        return user

    def reset_password(self, actor: UserInfo, username: str, password: str) -> None:
        """An admin sets someone's password (ends all their sessions). Recorded: whatever that user
        does next could have been done by whoever knows the new password, until they change it."""
        self._admin(actor)
        self.accounts.set_password(username, password, end_sessions=True)
        self.audit.append(actor.username, "password_reset", {"username": username})

    # -- grants (admin) ----------------------------------------------------------------------------

    def grant(self, actor: UserInfo, username: str, collection: str) -> None:
        self._admin(actor)
        self.accounts.grant(username, self.engine.collection(collection).id)
        self.audit.append(actor.username, "grant", {"collection": collection, "username": username})

    def revoke_grant(self, actor: UserInfo, username: str, collection: str) -> None:
        self._admin(actor)
        if collection not in self.accounts.grants_of(username):
            self.engine.collection(collection)  # an unknown collection: 404
            raise AccountError(f"{username} has no grant for {collection!r}")
        self.accounts.revoke(username, self.engine.collection(collection).id)
        self.audit.append(actor.username, "revoke", {"collection": collection, "username": username})

    # -- oneself ---------------------------------------------------------------------------------------

    def change_own_password(self, actor: UserInfo, current: str, new: str) -> None:
        if self.accounts.check_password(actor.username, current) is None:
            self.audit.append(actor.username, "password_change_refused", {"reason": "wrong current password"})
            raise AccountError("the current password is wrong")
        self.accounts.set_password(actor.username, new)
        self.audit.append(actor.username, "password_change", {})

    def issue_api_key(self, actor: UserInfo, username: str | None = None, label: str = "") -> tuple[int, str]:
        """A key for the actor themself. For anyone else: refused and recorded (see the module doc)."""
        owner = username or actor.username
        if owner != actor.username:
            self.audit.append(actor.username, "api_key_refused", {"username": owner,
                                                                  "reason": "a key for another user"})
            raise LifecycleDenied(f"{actor.username} may not issue an API key for {owner}: a key acts as its owner; "
                                  f"{owner} issues their own (POST /api/me/api-keys or `facesearch user api-key`)")
        key_id, secret = self.accounts.issue_api_key(owner, label)
        self.audit.append(actor.username, "api_key_issue", {"username": owner, "key_id": key_id, "label": label})
        return key_id, secret

    # -- API keys ------------------------------------------------------------------------------------

    def api_keys(self, actor: UserInfo, username: str | None = None) -> list[ApiKeyInfo]:
        owner = username or actor.username
        if owner != actor.username:
            self._admin(actor)
        return self.accounts.api_keys(owner)

    def revoke_api_key(self, actor: UserInfo, key_id: int, username: str | None = None) -> ApiKeyInfo:
        """Admins revoke anyone's key; others only their own. ``username``: whose key it must be."""
        mine = {k.id for k in self.accounts.api_keys() if k.username == actor.username}
        if key_id not in mine:
            self._admin(actor)
        owners = {k.id: k.username for k in self.accounts.api_keys(username)} if username else None
        if owners is not None and key_id not in owners:
            raise CatalogError(f"{username} has no API key {key_id}")
        info = self.accounts.revoke_api_key(key_id)
        self.audit.append(actor.username, "api_key_revoke", {"username": info.username, "key_id": key_id})
        return info
