"""Distributed ingest on Ray: photos/s of ``facesearch index --ray`` with 1 and 2 nodes against a local
run of the same photos (each into a fresh home).

The first ``--limit`` photos under DATASET (sorted, recursive) are copied into a work folder, then
indexed three times by the CLI as an operator runs it: locally (default settings), and through a
Ray cluster on loopback (``ray.cluster_utils.Cluster``, ``--cpus-per-node`` CPUs per node) of one
node and of two nodes. Reported per run: photos/s over the ingest itself (the summary's
``seconds``), wall seconds of the whole command (model loading and Ray's connection included),
faces indexed (must agree), and the overhead of Ray against the local run.
On one machine the nodes share its cores: 2 nodes here measure the overhead of distribution, not
a speed-up; on separate machines each node brings its own cores.

    nice -n 10 python bench/ray_ingest.py ../shared/data/lfw --limit 300 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


def pick_photos(dataset: Path, limit: int, into: Path) -> int:
    photos = sorted(p for p in dataset.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())[:limit]
    into.mkdir(parents=True)
    for i, photo in enumerate(photos):
        # copies: ingest does not follow symbolic links out of the folder it is given
        shutil.copyfile(photo, into / f"{i:05d}_{photo.name}")
    return len(photos)


def index(folder: Path, home: Path, *extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "facesearch.cli.main", "index", str(folder), "--collection", "b",
                           "--home", str(home), "--json", *extra], capture_output=True, text=True, env=env)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"index {' '.join(extra)} failed: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    return {"photos_per_s": round(summary["images_indexed"] / summary["seconds"], 2),
            "ingest_seconds": round(summary["seconds"], 1), "wall_seconds": round(wall, 1),
            "images_indexed": summary["images_indexed"], "faces_indexed": summary["faces_indexed"],
            **({"ray": summary["ray"]} if "ray" in summary else {})}


def ray_run(folder: Path, work: Path, nodes: int, cpus: int, name: str) -> dict:
    from facesearch.ingest.distributed import import_ray

    import_ray(loopback=True)
    from ray.cluster_utils import Cluster

    started = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        up = time.monotonic() - started
        result = index(folder, work / name, "--ray", cluster.address)
        result["cluster_start_seconds"] = round(up, 1)
        return result
    finally:
        cluster.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="a folder of photos (e.g. LFW)")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fs-ray-bench-"))
    photos = pick_photos(args.dataset, args.limit, work / "photos")
    report = {"photos": photos, "cpus": os.cpu_count(), "cpus_per_node": args.cpus_per_node,
              "local": index(work / "photos", work / "local")}
    report["ray_1_node"] = ray_run(work / "photos", work, 1, args.cpus_per_node, "ray1")
    report["ray_2_nodes"] = ray_run(work / "photos", work, 2, args.cpus_per_node, "ray2")
    local = report["local"]["photos_per_s"]
    for key in ("ray_1_node", "ray_2_nodes"):
        run = report[key]
        run["ingest_time_vs_local"] = round(local / run["photos_per_s"], 2) if run["photos_per_s"] else None
    faces = {report[k]["faces_indexed"] for k in ("local", "ray_1_node", "ray_2_nodes")}
    report["same_faces"] = len(faces) == 1 and faces != {0}
    print(json.dumps(report, indent=None if args.json else 2))
    return 0 if report["same_faces"] else 1


if __name__ == "__main__":
    sys.exit(main())
