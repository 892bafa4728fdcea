"""Handlers of ``serve``, ``user`` and ``audit``: running the server and governing it."""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from argparse import Namespace

from facesearch.engine import Engine
from facesearch.governance import Governance, local_operator

log = logging.getLogger(__name__)


def _gov(args: Namespace) -> Governance:
    return Governance(Engine.open(args.home, backend=getattr(args, "backend", None),
                                  database_url=getattr(args, "db", None), pack=args.pack))



def serve(args: Namespace) -> int:
    import uvicorn

    from facesearch.api.app import create_app
    from facesearch.logs import configure_from_settings
    from facesearch.settings import load_settings

    settings = load_settings(args.home, {"host": args.host, "port": args.port, "secure_cookies": args.secure_cookies,
                                         "retention_hours": args.retention_hours})
    configure_from_settings(settings)
    engine = Engine.open(settings.home, backend=args.backend, database_url=args.db, pack=args.pack)
    gov = Governance(engine)
    if gov.accounts.count_admins() == 0:
        print("facesearch: no admin yet: create one first with `facesearch user add NAME --role admin`",
              file=sys.stderr)
        return 2
    engine.analyzer  # noqa: B018 - load the models before the first request, not during it
    app = create_app(engine, secure_cookies=settings.secure_cookies,
                     retention_every_s=settings.retention_hours * 3600, settings=settings)
    if settings.log_format == "text":  # with JSON logs, every line of output is JSON (the log line below)
        print(f"facesearch serving {engine.home} on http://{settings.host}:{settings.port} (OpenAPI: /docs)",
              flush=True)
    log.info("serving", extra={"home": str(engine.home), "host": settings.host, "port": settings.port})
    # Our logging configuration, our access log (uvicorn's names raw paths); proxy headers only
    # from the proxies the operator named.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                log_level=settings.log_level.lower(), proxy_headers=bool(settings.trusted_proxies),
                forwarded_allow_ips=",".join(settings.trusted_proxies) or None)
    return 0


def retention(args: Namespace) -> int:
    """Images kept past their collection's retention period: list them, or (--apply) erase them."""
    with Engine.open(args.home, backend=args.backend, database_url=args.db, pack=args.pack) as engine:
        report = Governance(engine).enforce_retention(local_operator(), apply=args.apply)
    if args.json:
        print(json.dumps(report.__dict__, indent=2))
        return 0
    if not report.expired:
        print("nothing is past its retention period")
    for name, images in report.expired.items():
        print(f"{name}: {images} image(s) past the retention period")
    if report.applied and report.expired:
        print(f"erased {report.images_erased} image(s), {report.faces_erased} face(s); recorded in the audit log")
    elif report.expired:
        print("dry run: nothing erased (--apply erases them)")
    return 0


def _read_password(args: Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    env = os.environ.get("FACESEARCH_PASSWORD")
    if env:
        return env
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("facesearch: error: the passwords differ")
    return first


def user_add(args: Namespace) -> int:
    gov = _gov(args)
    user = gov.accounts.add_user(args.username, _read_password(args), args.role)
    gov.audit.append(local_operator().username, "user_add", {"username": user.username, "role": user.role})
    print(f"added {user.role} {user.username!r}")
    return 0


def user_list(args: Namespace) -> int:
    gov = _gov(args)
    for user in gov.accounts.users():
        grants = ", ".join(gov.accounts.granted_collections(user)) or "-"
        print(f"{user.username:<20} {user.role:<13} {'active' if user.active else 'inactive':<9} {grants}")
    return 0


def user_grant(args: Namespace) -> int:
    gov = _gov(args)
    info = gov.engine.collection(args.collection)
    gov.accounts.grant(args.username, info.id)
    gov.audit.append(local_operator().username, "grant", {"collection": args.collection, "username": args.username})
    print(f"granted {args.collection!r} to {args.username!r}")
    return 0


def user_key(args: Namespace) -> int:
    gov = _gov(args)
    secret = gov.accounts.create_api_key(args.username, label=f"issued by {local_operator().username}")
    gov.audit.append(local_operator().username, "api_key_issue", {"username": args.username})
    print(secret)
    return 0


def audit_verify(args: Namespace) -> int:
    check = _gov(args).audit.verify()
    if args.json:
        print(json.dumps({"ok": check.ok, "records": check.records, "problems": check.problems}, indent=2))
    elif check.ok:
        print(f"audit chain intact: {check.records} records verified")
    else:
        print(f"AUDIT CHAIN BROKEN ({check.records} records checked):")
        for record_id, problem in check.problems:
            print(f"  record {record_id}: {problem}")
    return 0 if check.ok else 1


def audit_export(args: Namespace) -> int:
    gov = _gov(args)
    entries = gov.audit.entries(actor=args.actor, action=args.action, case_ref=args.case)
    gov.audit.append(local_operator().username, "audit_export", {"returned": len(entries)})
    for entry in entries:
        print(json.dumps(entry.to_dict(), sort_keys=True))
    return 0
