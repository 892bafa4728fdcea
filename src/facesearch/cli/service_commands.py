"""Handlers of ``config show``, ``backup`` and ``restore``: running facesearch as a service."""

from __future__ import annotations

import argparse
from argparse import Namespace
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from facesearch.cli.common import opened_engine, print_json
from facesearch.settings import describe, load_settings


def add_service_commands(sub, home_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("config", help="the effective settings (environment, secret files, config.json)")
    config_sub = p.add_subparsers(metavar="ACTION")
    show = config_sub.add_parser("show", help="print every setting, secrets masked, and where it came from")
    show.add_argument("--home", default=None, help="facesearch home (default: $FACESEARCH_HOME or ~/.facesearch)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=config_show)

    p = sub.add_parser("backup", help="a consistent copy of a live home (catalog, thumbnails, index, keys)")
    home_args(p)
    p.add_argument("destination", type=Path, help="a new or empty folder outside the home")
    p.set_defaults(handler=backup)

    p = sub.add_parser("restore", help="rebuild a home from a backup folder, then check it (doctor, audit)")
    p.add_argument("source", type=Path, help="a folder written by `facesearch backup`")
    p.add_argument("--home", required=True, help="the new home (a new or empty folder)")
    p.add_argument("--db", default=None, help="empty PostgreSQL database to restore a PostgreSQL catalog into")
    p.add_argument("--milvus-uri", default=None, help="Milvus for the new home (default: milvus-lite in it; "
                   "never the backed-up home's server)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=restore)


def config_show(args: Namespace) -> int:
    settings = load_settings(args.home)
    views = describe(settings, args.home)
    if args.json:
        print_json({v.name: {"variable": v.variable, "value": v.value, "origin": v.origin} for v in views})
        return 0
    width = max(len(v.variable) for v in views)
    for v in views:
        value = "-" if v.value is None else (",".join(map(str, v.value)) or "-") if isinstance(v.value, list) \
            else str(v.value)
        print(f"{v.variable:<{width}}  {value:<40}  ({v.origin})")
    return 0


def backup(args: Namespace) -> int:
    from facesearch.backup import backup as take_backup
    from facesearch.governance import local_operator

    settings = load_settings(args.home)
    with opened_engine(args) as engine:
        report = take_backup(engine, args.destination, pg_bin=settings.pg_bin,
                             actor=local_operator().username)
    if args.json:
        print_json(asdict(report))
    else:
        print(f"backup of {report.faces} faces in {len(report.collections)} collection(s) written to "
              f"{report.destination}: {report.files} files, {report.bytes / 1e6:.1f} MB, {report.catalog} catalog, "
              f"{report.audit_records} audit records")
    return 0


def restore(args: Namespace) -> int:
    from facesearch.backup import restore as do_restore
    from facesearch.governance import local_operator

    settings = load_settings(args.home)
    report = do_restore(args.source, args.home, database_url=args.db, milvus_uri=args.milvus_uri,
                        pg_bin=settings.pg_bin, actor=local_operator().username)
    if args.json:
        print_json(asdict(report) | {"ok": report.ok})
    else:
        print(f"restored {report.faces} faces ({report.expected_faces} in the backup) into {report.home}; "
              f"index {'consistent' if report.consistent else 'INCONSISTENT'}; audit chain "
              f"{'intact' if report.audit_ok else 'BROKEN'} ({report.audit_records} records)")
        for problem in report.problems:
            print(f"  problem: {problem}")
    return 0 if report.ok else 1
