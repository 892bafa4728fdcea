"""Accountability: users and roles, collection grants, purpose and case on every search,
the hash-chained audit log, opt-out suppression, and view grants (every look at a face tied to
an audited search or view; refused looks counted, see :mod:`facesearch.governance.views`).
The API and CLI go through it.

Public surface: :class:`Governance`, :class:`Accounts`, :class:`UserInfo`, :class:`AuditLog`,
:class:`OptOutList`, the permission table (:mod:`facesearch.governance.policy`, :class:`Action`),
errors :class:`PermissionDenied`, :class:`MissingJustification`,
:class:`AccountError`.
"""

from facesearch.governance.accounts import AccountError, Accounts, UserInfo, local_operator
from facesearch.governance.audit import AuditLog, ChainCheck
from facesearch.governance.optout import OptOutList
from facesearch.governance.policy import Action, MissingJustification, PermissionDenied
from facesearch.governance.service import Governance

__all__ = ["AccountError", "Action", "Accounts", "AuditLog", "ChainCheck", "Governance", "MissingJustification",
           "OptOutList", "PermissionDenied", "local_operator", "UserInfo"]
