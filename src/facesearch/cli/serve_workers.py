"""``serve --workers N``: how ``serve``'s arguments reach uvicorn's worker processes.

uvicorn starts its workers as fresh interpreters that import an app by name, so the parent
passes ``serve``'s parsed arguments in an environment variable and every worker builds its own
engine and app from them (its own models, index and database connections) with
:func:`facesearch.cli.admin_commands.app_from_env`.
"""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

SERVE_ARGS_ENV = "FACESEARCH_SERVE_ARGS"
#: serve's arguments a worker needs (the handler function and the like stay behind).
_KEYS = ("home", "host", "port", "secure_cookies", "retention_hours", "cpu_workers", "cpu_queue", "ingest_root",
         "trusted_proxy", "backend", "db", "pack", "checkpoint_minutes", "audit_export")


def encode_args(args: Namespace) -> str:
    values = {key: getattr(args, key, None) for key in _KEYS}
    values["ingest_root"] = [str(p) for p in values["ingest_root"]] if values["ingest_root"] else None
    values["home"] = str(values["home"]) if values["home"] is not None else None
    return json.dumps(values)


def decode_args(text: str) -> Namespace:
    values = json.loads(text)
    if values.get("ingest_root"):
        values["ingest_root"] = [Path(p) for p in values["ingest_root"]]
    return Namespace(**values)

