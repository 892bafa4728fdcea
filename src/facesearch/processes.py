"""Whether a process of this machine still runs (a zombie counts as gone: it runs no code)."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return ") Z" not in stat.read_text()
    except OSError:  # it ended just now, or there is no /proc (not Linux: kill's answer stands)
        return not Path("/proc").is_dir()
