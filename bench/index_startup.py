"""Fixed costs of `facesearch index`: start-up, the ingest itself and exit, as whole processes.

A small folder (default: 20 LFW photos, strided, and 5 WIDER photos) is indexed into a fresh
home ``--repeat`` times per source tree (``--src``, put first on PYTHONPATH: compare a branch
with main in one run, alternating), and the medians are printed of:

- start-up: process start to the ingest's first log line (imports, parser, settings, catalog);
- ingest: the runner's own time (models loading in the background included, when they are);
- exit: the runner's last log line to process exit (index save, audit, interpreter shutdown);
- wall and CPU (user + system of the child process: less sensitive to a loaded machine);
- import CPU: the CPU time of importing what `facesearch index` imports, in a separate process.

    python bench/index_startup.py --lfw ../shared/data/lfw --wider ../shared/data/widerface_sample \\
        --src ../main/src --src src --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

IMPORT_PROBE = """
import sys, time
t = time.process_time()
import facesearch.cli.main as m
m.build_parser(m.command_word(['index'])) if hasattr(m, 'command_word') else m.build_parser()
import facesearch.cli.engine_commands, facesearch.settings, facesearch.catalog.store, facesearch.governance.schema
from facesearch.models import openvino_runtime
openvino_runtime.available()
print(time.process_time() - t)
"""
LOG_TIME = re.compile(r"^(\S+ \S+) INFO facesearch\.ingest\.runner", re.M)


def strided(paths: list[Path], limit: int) -> list[Path]:
    paths = sorted(paths)
    return paths if limit >= len(paths) else paths[:: len(paths) // limit][:limit]


def one_run(src: str, folder: Path, home: Path, runtime: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": src, "FACESEARCH_THREADS": str(os.cpu_count() or 1)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "facesearch.cli.main", "--runtime", runtime, "index", str(folder),
                           "--collection", "bench", "--home", str(home), "--json"],
                          env=env, capture_output=True, text=True, check=False)
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"facesearch index failed ({done.returncode}):\n{done.stderr[-3000:]}")
    first, last = (datetime.strptime(m, "%Y-%m-%d %H:%M:%S,%f").timestamp() for m in LOG_TIME.findall(done.stderr))
    return {"start_up_s": first - start, "ingest_s": last - first, "exit_s": end - last, "wall_s": end - start,
            "cpu_s": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
            "faces": json.loads(done.stdout)["faces_indexed"]}


def import_cpu(src: str) -> float:
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE], env={**os.environ, "PYTHONPATH": src},
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--wider", type=Path, required=True)
    parser.add_argument("--limit-lfw", type=int, default=20)
    parser.add_argument("--limit-wider", type=int, default=5)
    parser.add_argument("--src", action="append", default=None, help="source tree(s) to compare (default: src)")
    parser.add_argument("--runtime", default="openvino")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sources = [str(Path(s).resolve()) for s in (args.src or ["src"])]
    work = Path(tempfile.mkdtemp(prefix="fs-index-startup-"))
    rows: dict[str, list[dict[str, float]]] = {s: [] for s in sources}
    imports: dict[str, list[float]] = {s: [] for s in sources}
    try:
        folder = work / "photos"
        folder.mkdir()
        photos = (strided(list(args.lfw.glob("images/*/*.jpg")), args.limit_lfw)
                  + strided(list(args.wider.glob("images/*/*.jpg")), args.limit_wider))
        for i, photo in enumerate(photos):
            shutil.copy(photo, folder / f"{i:04d}_{photo.name}")
        for round_ in range(args.repeat):
            for src in sources:
                home = work / f"home-{round_}-{sources.index(src)}"
                rows[src].append(one_run(src, folder, home, args.runtime))
                shutil.rmtree(home, ignore_errors=True)
                imports[src].append(import_cpu(src))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"command": " ".join(sys.argv), "photos": len(photos), "repeat": args.repeat,
              "load_average": os.getloadavg(), "medians": {
                  src: {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
                  | {"import_cpu_s": round(statistics.median(imports[src]), 3)} for src, runs in rows.items()}}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{len(photos)} photos, median of {args.repeat}, load {result['load_average'][0]:.1f}")
    for src, m in result["medians"].items():
        print(f"  {src}: start-up {m['start_up_s']:.2f} s, ingest {m['ingest_s']:.2f} s, exit {m['exit_s']:.2f} s, "
              f"wall {m['wall_s']:.2f} s, CPU {m['cpu_s']:.2f} s, import CPU {m['import_cpu_s']:.2f} s, "
              f"{m['faces']:.0f} faces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
