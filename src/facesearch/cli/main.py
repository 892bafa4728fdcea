"""The ``facesearch`` command: a thin shell over the pipeline, models and eval packages.

Each subcommand parses arguments, calls the library and prints; ``--json`` gives the
same result machine-readably. Every error is one line on stderr saying what to do, never a
traceback: bad arguments (status 2, with the command's ``--help`` named), typed facesearch errors
and OS errors (status 2), an interrupted command (130) and, as a last resort, an unexpected
error (status 3; ``FACESEARCH_TRACEBACK=1`` shows where it came from).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from facesearch.errors import FacesearchError

if TYPE_CHECKING:  # the handlers' modules, imported by _Handler when their command runs
    from facesearch.cli import admin_commands, commands, engine_commands, eval_commands  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        return _main(argv)
    try:
        return _main(None)
    finally:  # the program itself (console script, python -m), which ends now: what is left is
        # the OS's to reclaim; a last garbage collection of the imported libraries' objects took
        # 0.2-0.4 s of every command's exit. Callers passing argv (tests, scripts) keep theirs.
        gc.freeze()


def _main(argv: list[str] | None) -> int:
    from facesearch.home import private_umask

    private_umask()  # catalog, thumbnails, uploads, index and keys: readable by this user only
    parser = build_parser(command_word(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help exits 0; an argument error was already said in one line
        return int(exc.code or 0) if not isinstance(exc.code, str) else _fail(exc.code)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # reports record the exact command
    if args.runtime:  # every analyzer this process opens (engine, eval, serve) reads it
        os.environ["FACESEARCH_RUNTIME"] = args.runtime
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1
    try:
        _configure_logging(args)
        return args.handler(args) or 0
    except SystemExit as exc:  # a handler's own "facesearch: error: ..." line
        if isinstance(exc.code, str):
            return _fail(exc.code)
        return int(exc.code or 0)
    except (FacesearchError, OSError) as exc:
        return _fail(f"facesearch: error: {_one_line(exc)}")
    except KeyboardInterrupt:
        return _fail("facesearch: interrupted", 130)
    except Exception as exc:  # a bug: still one line for the user, the traceback on request
        if os.environ.get("FACESEARCH_TRACEBACK"):
            raise
        return _fail(f"facesearch: unexpected error ({type(exc).__name__}: {_one_line(exc)}); "
                     "set FACESEARCH_TRACEBACK=1 to see where, and report it", 3)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # "PATH: not a directory", not "[Errno 20] ..."
        return f"{exc.filename}: {exc.strerror[0].lower()}{exc.strerror[1:]}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _fail(line: str, status: int = 2) -> int:
    line = " ".join(line.split())
    if not line.startswith("facesearch"):
        line = f"facesearch: error: {line}"
    print(line, file=sys.stderr)
    return status


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong and where the help is, no usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise SystemExit(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _configure_logging(args: argparse.Namespace) -> None:
    """Logs to stderr as the settings say (FACESEARCH_LOG_LEVEL / _FORMAT); a bad setting stops here."""
    from facesearch.logs import configure_from_settings
    from facesearch.settings import load_settings

    configure_from_settings(load_settings(getattr(args, "home", None)))


#: The commands defined in this module (the rest are groups kept in their own modules).
OWN_COMMANDS = frozenset({"detect", "verify", "models", "collections", "index", "search", "similar", "erase", "serve",
                          "retention", "user", "audit", "doctor", "eval", "calibrate"})


class _Handler:
    """A command's handler, imported when the command runs: building the parser imports no command
    module, so ``facesearch index`` never imports eval, clusters or the web server."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, args: argparse.Namespace) -> int | None:
        return getattr(import_module(f"facesearch.cli.{self.module}"), self.name)(args)

    def __repr__(self) -> str:
        return f"<handler facesearch.cli.{self.module}.{self.name}>"


def _global_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pack", default=None, help="built-in pack name or pinned local pack directory "
                        "(default: buffalo_s)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    parser.add_argument("--runtime", choices=("onnxruntime", "openvino", "auto"), default=None,
                        help="inference runtime (default: $FACESEARCH_RUNTIME or auto: OpenVINO on a CPU when "
                             "installed, else ONNX Runtime)")


def command_word(argv: list[str] | None) -> str | None:
    """The command ``argv`` names (``index``), read past the global options; None if unclear."""
    peek = OneLineParser(prog="facesearch", add_help=False)  # --help stays in the rest, unprinted
    _global_args(peek)
    try:
        _, rest = peek.parse_known_args(sys.argv[1:] if argv is None else argv)
    except SystemExit:  # a bad global option: the whole parser will say so
        return None
    return next((word for word in rest if not word.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command tree. Given the ``command`` about to run and defined here, the command groups
    kept in their own modules (subject, match, cluster, config, backup, restore, optout) are left
    out: importing those modules costs start-up time the command does not need."""
    parser = OneLineParser(prog="facesearch", description="Self-hosted, accountable face search.")
    _global_args(parser)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    everything = command is None or command not in OWN_COMMANDS

    p = sub.add_parser("detect", help="find faces in an image: boxes, landmarks, quality")
    p.add_argument("image", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--draw", type=Path, metavar="OUT.png", help="save a copy with boxes and landmarks drawn")
    p.set_defaults(handler=_Handler("commands", "detect"))

    p = sub.add_parser("verify", help="are the faces in two photos the same person?")
    p.add_argument("image_a", type=Path)
    p.add_argument("image_b", type=Path)
    p.add_argument("--face", type=int, nargs=2, metavar=("N_A", "N_B"), default=None,
                   help="pick face N of each photo (-1 = the largest central one)")
    p.add_argument("--threshold", type=float, default=None, help="override the calibrated threshold")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_Handler("commands", "verify"))

    p = sub.add_parser("models", help="list model packs, their files, hashes and licences")
    p.add_argument("--dir", type=Path, action="append", default=[], help="also show this pinned local pack")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_Handler("commands", "models_list"))
    models_sub = p.add_subparsers(metavar="ACTION")
    pin = models_sub.add_parser("pin", help="record the SHA-256 of a local InsightFace-layout pack")
    pin.add_argument("directory", type=Path)
    pin.add_argument("--name", default=None)
    pin.add_argument("--licence", default=None, help="licence text to record with the pack")
    pin.set_defaults(handler=_Handler("commands", "models_pin"))

    _add_engine_commands(sub, everything)
    if everything:
        from facesearch.cli.subject_commands import add_subject_commands  # subject ..., match

        add_subject_commands(sub, _home_args)

        from facesearch.cli.cluster_commands import add_cluster_commands  # cluster [ACTION]

        add_cluster_commands(sub, _home_args)

        from facesearch.cli.service_commands import add_service_commands  # config show, backup, restore

        add_service_commands(sub, _home_args)

    p = sub.add_parser("eval", help="accuracy protocols over real datasets")
    eval_sub = p.add_subparsers(metavar="PROTOCOL")
    lfw = eval_sub.add_parser("lfw", help="LFW view 2 verification (10 folds of pairs.txt)")
    lfw.add_argument("--data", type=Path, required=True, help="LFW folder with pairs.txt and images/")
    lfw.add_argument("--json", action="store_true", help="print JSON")
    lfw.add_argument("--calibration-out", type=Path, default=None,
                     help="also write a score calibration from all cross-identity pairs")
    lfw.set_defaults(handler=_Handler("commands", "eval_lfw"))
    _add_eval_commands(eval_sub, sub)
    _require_actions(parser)
    return parser


def command_parsers(parser: argparse.ArgumentParser):
    """Every (sub)command parser under ``parser``, depth first: what the CLI error test runs."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from command_parsers(child)


def _require_actions(parser: argparse.ArgumentParser) -> None:
    """A group command without its action (``facesearch user``) is an argument error in one line."""
    for p in command_parsers(parser):
        if p is parser or p.get_default("handler") is not None:
            continue
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                action.required = True
                action.dest = action.dest if action.dest not in (None, argparse.SUPPRESS) else "action"


def _eval_common(p: argparse.ArgumentParser, data_help: str) -> None:
    p.add_argument("--data", type=Path, required=True, help=data_help)
    p.add_argument("--out", type=Path, default=None, help="report folder (default: facesearch-eval/KIND-PACK)")
    p.add_argument("--cache", type=Path, default=None,
                   help="embedding cache file (default: ~/.cache/facesearch/eval/DATASET-HASH.npz)")
    p.add_argument("--seed", type=int, default=0, help="fixed seed of every sample and split")
    p.add_argument("--json", action="store_true", help="print the JSON report")


def _add_eval_commands(eval_sub, sub) -> None:
    people = "folder per person (DIR/NAME/*.jpg) or LFW (DIR/images/NAME/*.jpg + pairs.txt)"
    p = eval_sub.add_parser("verify", help="1:1: TAR at FAR 1e-2..1e-6, EER, DET plot, protocol accuracy")
    _eval_common(p, people)
    p.add_argument("--pairs", type=Path, default=None, help="a pairs.txt-format protocol (default: DIR/pairs.txt)")
    p.add_argument("--max-impostors", type=int, default=200_000_000,
                   help="score every different-person pair up to this many, else a seeded sample of this many")
    p.add_argument("--compare", action="append", default=[], metavar="PACK", help="also evaluate this pack")
    p.set_defaults(handler=_Handler("eval_commands", "eval_verify"))

    p = eval_sub.add_parser("identify", help="1:N as NIST FRTE: CMC, FNIR at FPIR, growth with gallery size")
    _eval_common(p, people)
    p.add_argument("--distractors", type=Path, default=None, help="folder of extra real distractor photos")
    p.add_argument("--sizes", default="1000,10000,100000,1000000", help="gallery sizes (comma-separated)")
    p.add_argument("--no-synthetic", action="store_true", help="never add synthetic distractor embeddings")
    p.add_argument("--holdout", type=float, default=0.2, help="share of people with 2+ photos never enrolled")
    p.add_argument("--compare", action="append", default=[], metavar="PACK", help="also evaluate this pack")
    p.set_defaults(handler=_Handler("eval_commands", "eval_identify"))

    p = eval_sub.add_parser("detect", help="detector recall and average precision at IoU 0.5 by face size")
    _eval_common(p, "image folder (DIR/images/... or DIR/...)")
    p.add_argument("--labels", type=Path, required=True, help="WIDER FACE format box file")
    p.add_argument("--limit", type=int, default=None, help="only N images, evenly strided")
    p.set_defaults(handler=_Handler("eval_commands", "eval_detect"))

    p = sub.add_parser("calibrate", help="fit score -> false-match rate on a labelled dataset; check it")
    _eval_common(p, people)
    p.add_argument("--exclude-people", type=Path, default=None,
                   help="people (LFW people*.txt or one name per line) kept out of the fit, to check it on")
    p.add_argument("--check-pairs", type=Path, default=None,
                   help="a protocol of pairs among the excluded people to include in the check")
    p.add_argument("--max-impostors", type=int, default=200_000_000)
    p.add_argument("--home", default=None, help="attach the calibration to this facesearch home")
    p.add_argument("--calibration-out", dest="out_file", type=Path, default=None, help="write it to this file")
    p.set_defaults(handler=_Handler("eval_commands", "calibrate"))


def _home_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", default=None, help="facesearch home (default: $FACESEARCH_HOME or ~/.facesearch)")
    p.add_argument("--backend", choices=["faiss", "milvus"], default=None,
                   help="vector index backend, fixed when the home is created (default: faiss)")
    p.add_argument("--db", default=None, help="catalog database URL, e.g. postgresql+psycopg://... "
                   "(default: SQLite in the home)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _export_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--export", action="append", default=None, metavar="DIR",
                   help=f"checkpoint export folder, repeatable; {what} (default: $FACESEARCH_AUDIT_EXPORT)")


def _justification(p: argparse.ArgumentParser) -> None:
    p.add_argument("--purpose", required=True, help="why you search (kept in the audit log)")
    p.add_argument("--case", required=True, help="the case or request reference (kept in the audit log)")


def _add_engine_commands(sub, everything: bool) -> None:
    p = sub.add_parser("collections", help="list collections, or create one with its legal basis")
    _home_args(p)
    p.add_argument("--create", metavar="NAME", default=None)
    p.add_argument("--legal-basis", default=None, help="why you may process these photos (consent, warrant...)")
    p.add_argument("--retention-days", type=int, default=None)
    p.add_argument("--no-thumbnails", action="store_true", help="keep embeddings only (data minimisation)")
    p.set_defaults(handler=_Handler("engine_commands", "collections"))

    p = sub.add_parser("index", help="ingest photos and videos (files or folders, recursively) into a collection")
    _home_args(p)
    p.add_argument("paths", nargs="+")
    p.add_argument("--collection", required=True)
    p.add_argument("--workers", type=int, default=2, help="decoding threads")
    p.add_argument("--min-face", type=float, default=16.0, help="do not index faces smaller than this (px)")
    p.add_argument("--video-fps", type=float, default=2.0, help="video frames sampled per second (default 2)")
    p.add_argument("--no-wait", action="store_true", help="refuse instead of waiting if another writer runs")
    p.add_argument("--allow-erased", action="store_true",
                   help="index content that was erased earlier (refused by default; audited)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="detect and embed on a Ray cluster (HOST:PORT, auto, or local: start one on 127.0.0.1); "
                        "needs the [ray] extra")
    p.set_defaults(handler=_Handler("engine_commands", "index"))

    p = sub.add_parser("search", help="where else does the person in this photo appear?")
    _home_args(p)
    p.add_argument("probe")
    p.add_argument("--collection", action="append", default=[], help="search only these (repeatable)")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--face", type=int, default=None, help="use face N of the probe photo")
    p.add_argument("--threshold", type=float, default=None, help="override the calibrated search threshold")
    p.add_argument("--include-weaker", action="store_true",
                   help="also show candidates below the threshold (most likely strangers; recorded in the audit log)")
    _justification(p)
    p.set_defaults(handler=_Handler("engine_commands", "search"))

    p = sub.add_parser("similar", help="faces similar to an indexed face")
    _home_args(p)
    p.add_argument("face_id", type=int)
    p.add_argument("--collection", action="append", default=[])
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--include-weaker", action="store_true",
                   help="also show candidates below the threshold (recorded in the audit log)")
    _justification(p)
    p.set_defaults(handler=_Handler("engine_commands", "similar"))

    p = sub.add_parser("erase", help="remove faces for real: vectors, catalog rows and thumbnails")
    _home_args(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--face", type=int, nargs="+", metavar="ID")
    target.add_argument("--image", type=int, nargs="+", metavar="ID")
    target.add_argument("--collection", metavar="NAME")
    target.add_argument("--like", metavar="PROBE", help="every face similar to this photo's face")
    p.add_argument("--min-score", type=float, default=None, help="with --like: lowest similarity erased")
    p.add_argument("--probe-face", type=int, default=None, help="with --like: use face N of the probe")
    p.add_argument("--reason", default="", help="why (erasure request reference): kept in the audit log")
    p.set_defaults(handler=_Handler("engine_commands", "erase"))

    _add_admin_commands(sub)

    if everything:
        from facesearch.cli.optout_commands import add_optout_commands  # optout add/list/remove

        add_optout_commands(sub, _home_args)

    p = sub.add_parser("doctor", help="check that index, catalog and thumbnails agree and that the home's files "
                       "are private (0700/0600); repair from the catalog, tighten permissions")
    _home_args(p)
    p.add_argument("--check-only", action="store_true")
    p.set_defaults(handler=_Handler("engine_commands", "doctor"))


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number (1..65535)")
    return port


def _add_admin_commands(sub) -> None:
    from facesearch.governance.policy import ROLES

    p = sub.add_parser("serve", help="run the web app and REST API")
    _home_args(p)
    p.add_argument("--host", default=None, help="listen address (default: FACESEARCH_HOST or 127.0.0.1)")
    p.add_argument("--port", type=_port, default=None, help="port (default: FACESEARCH_PORT or 8000)")
    p.add_argument("--secure-cookies", action="store_true", default=None,
                   help="mark cookies Secure (behind HTTPS; FACESEARCH_SECURE_COOKIES)")
    p.add_argument("--retention-hours", type=float, default=None,
                   help="erase images past their collection's retention period at start and every N hours "
                        "(default: FACESEARCH_RETENTION_HOURS or 6)")
    p.add_argument("--ingest-root", type=Path, action="append", metavar="DIR",
                   help="a folder under which admins may ingest server folders (repeatable; default: none, "
                        "or FACESEARCH_INGEST_ROOTS)")
    p.add_argument("--cpu-workers", type=int, default=None,
                   help="photo/model jobs run at once (default: FACESEARCH_WORKERS or 2)")
    p.add_argument("--cpu-queue", type=int, default=None,
                   help="jobs that may wait beyond those before 503 (default: FACESEARCH_WORKER_QUEUE or 8)")
    p.add_argument("--trusted-proxy", action="append", default=None, metavar="ADDR",
                   help="a reverse proxy (address or network) whose X-Forwarded-For is believed; repeatable "
                   "(default: $FACESEARCH_TRUSTED_PROXIES, comma-separated; else none)")
    p.add_argument("--checkpoint-minutes", type=float, default=60.0,
                   help="sign the audit chain head at start and every N minutes (0: never)")
    p.add_argument("--audit-export", action="append", default=None, metavar="DIR",
                   help="copy scheduled audit checkpoints there (write-once); repeatable "
                   "(default: $FACESEARCH_AUDIT_EXPORT)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="API processes sharing the port (default 1); with more than one, use a PostgreSQL "
                        "catalog (--db) for real concurrency (docs/scale.md)")
    p.set_defaults(handler=_Handler("admin_commands", "serve"))

    p = sub.add_parser("retention", help="images past their collection's retention period: list, or --apply")
    _home_args(p)
    p.add_argument("--apply", action="store_true", help="erase them (audited); without it: a dry run")
    p.set_defaults(handler=_Handler("admin_commands", "retention"))

    p = sub.add_parser("user", help="manage users (admin, investigator, auditor)")
    user_sub = p.add_subparsers(metavar="ACTION")
    add = user_sub.add_parser("add", help="add a user; the password is asked for (or --password-stdin)")
    _home_args(add)
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true")
    add.set_defaults(handler=_Handler("admin_commands", "user_add"))
    ls = user_sub.add_parser("list", help="users, roles and granted collections")
    _home_args(ls)
    ls.set_defaults(handler=_Handler("admin_commands", "user_list"))
    grant = user_sub.add_parser("grant", help="let an investigator search a collection")
    _home_args(grant)
    grant.add_argument("username")
    grant.add_argument("collection")
    grant.set_defaults(handler=_Handler("admin_commands", "user_grant"))
    revoke = user_sub.add_parser("revoke", help="take a collection grant away from an investigator")
    _home_args(revoke)
    revoke.add_argument("username")
    revoke.add_argument("collection")
    revoke.set_defaults(handler=_Handler("admin_commands", "user_revoke"))
    for name, handler, text in (("deactivate", "user_deactivate", "stop a user logging in (sessions end)"),
                                ("reactivate", "user_reactivate", "let a deactivated user log in again")):
        q = user_sub.add_parser(name, help=text)
        _home_args(q)
        q.add_argument("username")
        q.set_defaults(handler=_Handler("admin_commands", handler))
    q = user_sub.add_parser("role", help="change a user's role (leaving investigator drops the grants)")
    _home_args(q)
    q.add_argument("username")
    q.add_argument("role", choices=ROLES)
    q.set_defaults(handler=_Handler("admin_commands", "user_role"))
    q = user_sub.add_parser("password", help="reset a user's password (asked for, or --password-stdin); audited")
    _home_args(q)
    q.add_argument("username")
    q.add_argument("--password-stdin", action="store_true")
    q.set_defaults(handler=_Handler("admin_commands", "user_password"))
    key = user_sub.add_parser("api-key", help="issue your own API key for scripts (printed once); needs the "
                              "user's own password (asked for, or --password-stdin)")
    _home_args(key)
    key.add_argument("username")
    key.add_argument("--label", default="", help="what the key is for")
    key.add_argument("--password-stdin", action="store_true")
    key.set_defaults(handler=_Handler("admin_commands", "user_key"))
    q = user_sub.add_parser("keys", help="list API keys (all, or one user's): id, state, label; never the secret")
    _home_args(q)
    q.add_argument("username", nargs="?", default=None)
    q.set_defaults(handler=_Handler("admin_commands", "user_keys"))
    q = user_sub.add_parser("revoke-key", help="revoke an API key by id (see `user keys`)")
    _home_args(q)
    q.add_argument("key_id", type=int)
    q.add_argument("--username", default=None, help="whose key it must be (a check)")
    q.set_defaults(handler=_Handler("admin_commands", "user_revoke_key"))

    p = sub.add_parser("audit", help="the hash-chained audit log")
    audit_sub = p.add_subparsers(metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="recompute the chain and check it against every signed "
                                  "checkpoint; name any edited, inserted or deleted record")
    _home_args(verify)
    _export_arg(verify, "also check the checkpoints exported there")
    verify.add_argument("--public-key", default=None, help="the audit public key (PEM) to trust: pin it "
                        "(default: $FACESEARCH_AUDIT_PUBLIC_KEY, else the signing key's, else the home's copy)")
    verify.set_defaults(handler=_Handler("admin_commands", "audit_verify"))
    checkpoint = audit_sub.add_parser("checkpoint", help="sign the chain head now (Ed25519; key outside the "
                                      "catalog) and store it in the home and any export folder")
    _home_args(checkpoint)
    _export_arg(checkpoint, "also write it there (write-once: files are created, never replaced)")
    checkpoint.set_defaults(handler=_Handler("admin_commands", "audit_checkpoint"))
    export = audit_sub.add_parser("export", help="print records as JSON lines")
    _home_args(export)
    export.add_argument("--actor", default=None)
    export.add_argument("--action", default=None)
    export.add_argument("--case", default=None)
    export.set_defaults(handler=_Handler("admin_commands", "audit_export"))


if __name__ == "__main__":
    sys.exit(main())
