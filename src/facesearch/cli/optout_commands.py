"""``facesearch optout add/list/remove``: people who asked not to be found, managed from the CLI.

A thin shell over :class:`~facesearch.governance.Governance` acting as the local operator:
registering and withdrawing an opt-out are audited exactly as through the server. The photo
given to ``add`` is read, its face embedded, and nothing of the photo is kept.
"""

from __future__ import annotations

import argparse
from argparse import Namespace
from collections.abc import Callable

from facesearch.cli.common import governed, print_json, read_probe
from facesearch.governance import local_operator


def add_optout_commands(sub, home_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("optout", help="people who asked not to be found: add, list, remove (audited)")
    optout_sub = p.add_subparsers(metavar="ACTION")
    add = optout_sub.add_parser("add", help="register an opt-out from a photo of the person (the photo is not kept)")
    home_args(add)
    add.add_argument("photo")
    add.add_argument("--reason", required=True, metavar="REFERENCE",
                     help="the request reference (kept in the list and the audit log; never a name)")
    add.add_argument("--face", type=int, default=None, help="use face N of the photo")
    add.set_defaults(handler=optout_add)
    ls = optout_sub.add_parser("list", help="the opt-outs: id, request reference, who registered it, when")
    home_args(ls)
    ls.set_defaults(handler=optout_list)
    rm = optout_sub.add_parser("remove", help="withdraw an opt-out (audited)")
    home_args(rm)
    rm.add_argument("optout_id", type=int, metavar="ID")
    rm.add_argument("--reason", default="", help="why it is withdrawn (kept in the audit log)")
    rm.set_defaults(handler=optout_remove)


def optout_add(args: Namespace) -> int:
    probe = read_probe(args.photo)
    with governed(args) as gov:
        optout_id = gov.opt_out(local_operator(), probe, args.reason, face_index=args.face)
        threshold = gov.optouts.threshold
    if args.json:
        print_json({"id": optout_id, "threshold": threshold}, indent=None)
    else:
        print(f"opt-out {optout_id} registered ({args.reason}); faces scoring {threshold:.3f} or more against it "
              "are hidden from every result and never indexed; the photo was not kept")
    return 0


def optout_list(args: Namespace) -> int:
    with governed(args) as gov:
        entries = gov.opt_outs(local_operator())
    if args.json:
        print_json(entries)
        return 0
    if not entries:
        print("no opt-outs")
    for e in entries:
        print(f"{e['id']:<6} {e['created_at'][:19]}  by {e['created_by']:<24} {e['reference']}")
    return 0


def optout_remove(args: Namespace) -> int:
    with governed(args) as gov:
        gov.withdraw_opt_out(local_operator(), args.optout_id, args.reason)
    if args.json:
        print_json({"id": args.optout_id, "withdrawn": True}, indent=None)
    else:
        print(f"opt-out {args.optout_id} withdrawn (recorded in the audit log)")
    return 0
