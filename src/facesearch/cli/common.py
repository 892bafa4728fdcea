"""The CLI's plumbing, written once: open a home from the command's arguments, one pattern that
always closes the engine (also when the command fails), and one printer for JSON output.

Command handlers are thin shells over governance: :func:`operator_command` opens the home,
builds the governed service the handler needs and passes the local operator (``local:<login>``,
an admin: whoever can read the home's files) as the actor, so every action is checked and
audited exactly as through the server.
"""

from __future__ import annotations

import functools
import json
from argparse import Namespace
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from facesearch.errors import ImageError

if TYPE_CHECKING:  # imported when a command runs: ``facesearch --help`` and ``config show`` stay quick
    from facesearch.governance import Governance, UserInfo
    from facesearch.services.engine import Engine

S = TypeVar("S")


def open_engine(args: Namespace) -> Engine:
    """The home named by ``--home`` (or the default), with ``--backend``, ``--db`` and ``--pack`` if given.
    The caller closes it: prefer :func:`opened_engine` or :func:`governed`."""
    from facesearch.governance.schema import catalog_schema
    from facesearch.services.engine import Engine

    return Engine.open(args.home, backend=getattr(args, "backend", None), database_url=getattr(args, "db", None),
                       pack=getattr(args, "pack", None), schema=catalog_schema())


@contextmanager
def opened_engine(args: Namespace) -> Iterator[Engine]:
    """The home opened from the arguments, closed on the way out whatever happens."""
    engine = open_engine(args)
    try:
        yield engine
    finally:
        engine.close()


@contextmanager
def governed(args: Namespace) -> Iterator[Governance]:
    """Governance over the home opened from the arguments (closed on the way out)."""
    from facesearch.governance import Governance

    with opened_engine(args) as engine:
        yield Governance(engine)


def operator_command(make: Callable[[Governance], S]) -> Callable[[Callable[[Namespace, S, UserInfo], int | None]],
                                                                   Callable[[Namespace], int]]:
    """A decorator: the handler ``(args, service, actor)`` runs with ``service = make(governance)`` over
    the opened home and the local operator as ``actor``; the home is closed afterwards."""

    def decorate(handler: Callable[[Namespace, S, UserInfo], int | None]) -> Callable[[Namespace], int]:
        @functools.wraps(handler)
        def wrapped(args: Namespace) -> int:
            from facesearch.governance import local_operator

            with governed(args) as gov:
                return handler(args, make(gov), local_operator()) or 0

        return wrapped

    return decorate


def action_adder(actions: Any, home_args: Callable[[Any], None]) -> Callable[..., Any]:
    """``action(name, help, handler)``: a subcommand of ``actions`` (argparse subparsers) taking the home
    arguments and running ``handler``; returns its parser for the action's own arguments."""

    def action(name: str, help_text: str, handler: Callable[[Namespace], int]) -> Any:
        parser = actions.add_parser(name, help=help_text)
        home_args(parser)
        parser.set_defaults(handler=handler)
        return parser

    return action


def print_json(data: Any, *, sort_keys: bool = False, indent: int | None = 2) -> None:
    """The one JSON printer of the CLI (``--json``): dataclass dicts, paths and dates as strings."""
    print(json.dumps(data, indent=indent, default=str, sort_keys=sort_keys))


def read_probe(path: str | Path) -> bytes:
    """The bytes of a photo named on the command line, or an :class:`ImageError` that says why not."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(Path(path), "no such file") from exc
    except OSError as exc:
        raise ImageError(Path(path), f"cannot read: {exc.strerror or exc}") from exc
