"""Handlers of ``serve``, ``user`` and ``audit``: running the server and governing it."""

from __future__ import annotations

import getpass
import logging
import os
import sys
from argparse import Namespace

from facesearch.cli.common import governed, operator_command, print_json
from facesearch.governance import AccountError, Governance, UserInfo, local_operator
from facesearch.governance.accounts import local_auditor
from facesearch.services.engine import Engine

log = logging.getLogger(__name__)


#: a handler ``(args, governance, actor)`` over the opened home, closed afterwards
_governed = operator_command(lambda gov: gov)



def serve(args: Namespace) -> int:
    import uvicorn

    from facesearch.api.proxies import TrustedProxies  # noqa: F401 - fail early on a broken install
    from facesearch.logs import configure_from_settings

    settings = serve_settings(args)
    configure_from_settings(settings)
    processes = getattr(args, "workers", 1) or 1
    if processes > 1:
        # N processes on one socket (uvicorn's supervisor restarts one that dies). Each builds its
        # own app from the same arguments; sessions, throttling, jobs and the audit chain live in
        # the catalog's database, and each process's index follows the catalog (see docs/scale.md).
        from facesearch.cli.serve_workers import SERVE_ARGS_ENV, encode_args

        with Engine.open(settings.home, backend=args.backend, database_url=args.db, pack=args.pack) as engine:
            if Governance(engine).accounts.count_admins() == 0:
                print("facesearch: no admin yet: create one first with `facesearch user add NAME --role admin`",
                      file=sys.stderr)
                return 2
        os.environ[SERVE_ARGS_ENV] = encode_args(args)
        print(f"facesearch serving {settings.home} on http://{settings.host}:{settings.port} "
              f"with {processes} processes (OpenAPI: /docs)", flush=True)
        uvicorn.run("facesearch.cli.admin_commands:app_from_env", factory=True, workers=processes,
                    host=settings.host, port=settings.port, log_config=None, access_log=False,
                    log_level=settings.log_level.lower(), proxy_headers=False, timeout_keep_alive=5)
        return 0
    app = build_app(args, settings)
    if app is None:
        return 2
    # Our logging configuration and access log (uvicorn's names raw paths). uvicorn's own X-Forwarded-For
    # handling (it trusts 127.0.0.1 by default) is off: the app believes only the trusted proxies.
    # Idle connections are closed after 5 s; slow request bodies are cut by RequestLimits.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                log_level=settings.log_level.lower(), proxy_headers=False, timeout_keep_alive=5)
    return 0


def serve_settings(args: Namespace):
    from facesearch.settings import load_settings

    return load_settings(args.home, {
        "host": args.host, "port": args.port, "secure_cookies": args.secure_cookies,
        "retention_hours": args.retention_hours, "workers": args.cpu_workers, "worker_queue": args.cpu_queue,
        "ingest_roots": args.ingest_root, "trusted_proxies": args.trusted_proxy})


def build_app(args: Namespace, settings=None, *, announce: bool = True):
    """The server's app for ``serve``'s arguments (None, with a message, when there is no admin yet)."""
    from facesearch.api.app import create_app
    from facesearch.api.proxies import TrustedProxies
    from facesearch.api.workers import deprioritize_background_threads
    from facesearch.governance.checkpoints import key_id, load_signing_key

    settings = settings or serve_settings(args)
    engine = Engine.open(settings.home, backend=args.backend, database_url=args.db, pack=args.pack)
    gov = Governance(engine)
    if gov.accounts.count_admins() == 0:
        print("facesearch: no admin yet: create one first with `facesearch user add NAME --role admin`",
              file=sys.stderr)
        return None
    key = load_signing_key(engine.home, create=args.checkpoint_minutes > 0)  # the key file, made 0600 if missing
    engine.analyzer  # noqa: B018 - load the models before the first request, not during it
    # The runtimes' threads now exist: they yield to the event loop and logins under load.
    deprioritize_background_threads()
    # The event loop waits at most 1 ms (not 5) for the GIL behind the photo-crunching threads.
    sys.setswitchinterval(0.001)
    app = create_app(engine, secure_cookies=settings.secure_cookies,
                     retention_every_s=settings.retention_hours * 3600, settings=settings,
                     trusted_proxies=TrustedProxies(settings.trusted_proxies),
                     checkpoint_every_s=args.checkpoint_minutes * 60 or None, checkpoint_export=args.audit_export)
    if announce and settings.log_format == "text":  # with JSON logs, every line of output is JSON
        print(f"facesearch serving {engine.home} on http://{settings.host}:{settings.port} (OpenAPI: /docs)",
              flush=True)
        if key is not None:
            print(f"audit checkpoints every {args.checkpoint_minutes:g} min, signed by key "
                  f"{key_id(key.public_key())}", flush=True)
    log.info("serving", extra={"home": str(engine.home), "host": settings.host, "port": settings.port})
    return app


def app_from_env():
    """The app of one worker process (uvicorn calls this: ``factory=True``)."""
    from facesearch.cli.serve_workers import SERVE_ARGS_ENV, decode_args
    from facesearch.logs import configure_from_settings

    args = decode_args(os.environ[SERVE_ARGS_ENV])
    settings = serve_settings(args)
    configure_from_settings(settings)
    app = build_app(args, settings, announce=False)
    if app is None:
        raise SystemExit(2)
    return app


def retention(args: Namespace) -> int:
    """Images kept past their collection's retention period: list them, or (--apply) erase them."""
    with governed(args) as gov:
        report = gov.enforce_retention(local_operator(), apply=args.apply)
    if args.json:
        print_json(report.__dict__)
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
    if not sys.stdin.isatty():  # getpass would fall back to echoing, or end in EOFError
        raise SystemExit(f"facesearch: error: no terminal to ask for the password of {args.username!r}: "
                         "pipe it in with --password-stdin (e.g. `printf '%s\\n' \"$PW\" | facesearch user ... "
                         "--password-stdin`) or set FACESEARCH_PASSWORD")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("facesearch: error: the passwords differ")
    return first


def _lifecycle(gov: Governance):
    from facesearch.governance.lifecycle import AccountLifecycle

    return AccountLifecycle(gov.accounts, gov.audit, gov.engine)


@_governed
def user_add(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    user = _lifecycle(gov).add_user(actor, args.username, _read_password(args), args.role)
    print(f"added {user.role} {user.username!r}")
    return 0


@_governed
def user_list(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    for user in gov.accounts.users():
        grants = ", ".join(gov.accounts.granted_collections(user)) or "-"
        print(f"{user.username:<20} {user.role:<13} {'active' if user.active else 'inactive':<9} {grants}")
    return 0


@_governed
def user_grant(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    _lifecycle(gov).grant(actor, args.username, args.collection)
    print(f"granted {args.collection!r} to {args.username!r}")
    return 0


@_governed
def user_revoke(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    _lifecycle(gov).revoke_grant(actor, args.username, args.collection)
    print(f"revoked {args.username!r}'s grant of {args.collection!r}")
    return 0


@_governed
def user_deactivate(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    _lifecycle(gov).deactivate(actor, args.username)
    print(f"deactivated {args.username!r} (sessions ended; API keys refused while inactive)")
    return 0


@_governed
def user_reactivate(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    _lifecycle(gov).reactivate(actor, args.username)
    print(f"reactivated {args.username!r}")
    return 0


@_governed
def user_role(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    user = _lifecycle(gov).set_role(actor, args.username, args.role)
    print(f"{user.username!r} is now {'an' if user.role[0] in 'aeiou' else 'a'} {user.role}")
    return 0


@_governed
def user_password(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    """An operator resets a user's password (recorded; the user's sessions end)."""
    _lifecycle(gov).reset_password(actor, args.username, _read_password(args))
    print(f"password of {args.username!r} reset (recorded in the audit log; their sessions ended)")
    return 0


@_governed
def user_key(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    """An API key for scripts, for the user who proves who they are with their own password: an
    operator cannot mint one for someone else and act as them unrecorded."""
    user = gov.accounts.check_password(args.username, _read_password(args))
    if user is None:
        gov.audit.append(actor.username, "api_key_refused",
                         {"username": args.username, "reason": "wrong password or inactive user"})
        raise AccountError(f"wrong password for {args.username!r} (or the user is inactive): only the user "
                           "themself may issue their API key")
    key_id, secret = _lifecycle(gov).issue_api_key(user, label=args.label or f"cli, {actor.username}")
    print(secret)
    return 0


@_governed
def user_keys(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    keys = _lifecycle(gov).api_keys(actor, args.username) if args.username else gov.accounts.api_keys()
    if args.json:
        print_json([k.__dict__ for k in keys])
    for key in keys if not args.json else []:
        print(f"{key.id:<6} {key.username:<20} {'revoked' if key.revoked else 'active':<8} {key.created_at}  "
              f"{key.label}")
    return 0


@_governed
def user_revoke_key(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    info = _lifecycle(gov).revoke_api_key(actor, args.key_id, args.username)
    print(f"revoked API key {info.id} of {info.username!r}")
    return 0


def _anchor(gov: Governance):
    from facesearch.governance.checkpoints import AuditAnchor

    return AuditAnchor(gov.audit, gov.engine.home)


@_governed
def audit_verify(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    """The chain, and every signed checkpoint (the home's and the exports'): names the first record
    that differs. Exit status 1 when anything is wrong."""
    check = _anchor(gov).verify(export=args.export, public_key=args.public_key)
    if args.json:
        print_json(check.to_dict())
    elif check.ok:
        print(f"audit chain intact: {check.records} records verified"
              + (f", against {check.checkpoints} signed checkpoint(s)" if check.checkpoints else
                 "; no signed checkpoint yet (`facesearch audit checkpoint`): a rewrite of the whole chain "
                 "would not be seen"))
        for note in check.notes:
            print(f"  {note}")
    else:
        print(f"AUDIT CHAIN BROKEN ({check.records} records, {check.checkpoints} checkpoint(s) checked):")
        for record_id, problem in check.problems:
            print(f"  record {record_id}: {problem}")
    return 0 if check.ok else 1


@_governed
def audit_checkpoint(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    """Sign the chain head now (Ed25519, key outside the catalog) and export it."""
    result = _anchor(gov).checkpoint(actor.username, export=args.export)
    cp = result.checkpoint
    if args.json:
        print_json({"checkpoint": cp.to_dict() if cp else None, "path": str(result.path or ""),
                    "exported": [str(p) for p in result.exported], "reason": result.reason})
    elif cp is None:
        print(f"no new checkpoint: {result.reason}")
    else:
        print(f"checkpoint of records {cp.from_id + 1}..{cp.last_id} signed (key {cp.key_id}): {result.path}")
    for path in result.exported if not args.json else []:
        print(f"exported {path}")
    return 0


@_governed
def audit_export(args: Namespace, gov: Governance, actor: UserInfo) -> int:
    entries = gov.read_audit(local_auditor(), export=True, actor=args.actor, action=args.action, case_ref=args.case)
    for entry in entries:
        print_json(entry.to_dict(), sort_keys=True, indent=None)
    return 0
