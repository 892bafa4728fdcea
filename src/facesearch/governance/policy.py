"""The permission table: which roles may take which action, and the justification every
search needs (:func:`justify`). The one home of these rules.

Governance checks it on every call (:meth:`Governance.require`), the API checks it before a
request's body is read (so a caller without the role gets 403 whatever it sends, see
:mod:`facesearch.api.deps`), and the web pages use it for their menus. A role is never
written out anywhere else.
"""

from __future__ import annotations

from enum import StrEnum

from facesearch.errors import FacesearchError

ADMIN, INVESTIGATOR, AUDITOR = "admin", "investigator", "auditor"
#: every role a user may have
ROLES = (ADMIN, INVESTIGATOR, AUDITOR)


class PermissionDenied(FacesearchError):
    """The actor's role or grants do not allow this."""


class MissingJustification(FacesearchError):
    """A search or verification without a purpose or case reference."""


def justify(purpose: str | None, case_ref: str | None) -> tuple[str, str]:
    """The purpose and case reference every look at faces needs, stripped; refused when either is blank."""
    purpose, case_ref = (purpose or "").strip(), (case_ref or "").strip()
    if not purpose or not case_ref:
        raise MissingJustification("a purpose and a case reference are required for every search")
    return purpose, case_ref


class Action(StrEnum):
    """What a user may ask for; each is allowed to the roles of :data:`PERMISSIONS`."""

    OWN_ACCOUNT = "own_account"  # log out, see oneself, change one's password, one's API keys
    SEARCH = "search"  # search, verify, look at faces and photos (under a view grant)
    VIEW_COLLECTIONS = "view_collections"  # list the collections one is granted
    SUBJECTS = "subjects"  # galleries, subjects, enrolment, subject search, decisions
    CLUSTERS = "clusters"  # run, read and edit clusters of granted collections
    MANAGE_USERS = "manage_users"  # users, roles, passwords, API keys of others
    MANAGE_COLLECTIONS = "manage_collections"  # create collections, grants, ingest, jobs
    ERASE = "erase"  # erasure, retention, opt-outs, removing a gallery
    READ_AUDIT = "read_audit"  # read, export and verify the audit log


#: action -> the roles that may take it
PERMISSIONS: dict[Action, tuple[str, ...]] = {
    Action.OWN_ACCOUNT: (ADMIN, INVESTIGATOR, AUDITOR),
    Action.SEARCH: (ADMIN, INVESTIGATOR),
    Action.VIEW_COLLECTIONS: (ADMIN, INVESTIGATOR),
    Action.SUBJECTS: (ADMIN, INVESTIGATOR),
    Action.CLUSTERS: (ADMIN, INVESTIGATOR),
    Action.MANAGE_USERS: (ADMIN,),
    Action.MANAGE_COLLECTIONS: (ADMIN,),
    Action.ERASE: (ADMIN,),
    Action.READ_AUDIT: (AUDITOR,),
}


def may(role: str, action: Action) -> bool:
    return role in PERMISSIONS[action]


def check(username: str, role: str, action: Action) -> None:
    """Raise :class:`PermissionDenied` unless ``role`` may take ``action``."""
    if not may(role, action):
        roles = PERMISSIONS[action]
        raise PermissionDenied(f"{username} ({role}) may not do this; needs {' or '.join(roles)}")
