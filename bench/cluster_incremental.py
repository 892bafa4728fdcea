"""Clustering a collection through the engine: a full run vs incremental runs after small ingests.

What it measures is ``facesearch cluster --collection NAME`` as users run it (the service
:class:`facesearch.services.clusters.Clusters`: catalog reads, the batch clustering or the per-face
k-NN queries in the collection's FAISS index, and the writes of the placements), not the
algorithm on arrays alone (that is ``bench/cluster_lfw.py``).

Faces are stored in a temporary home through the catalog (one "photo" per face) and the
collection's vector index, exactly as ingest leaves them, without running the detector:

- ``--lfw DIR``: every LFW face's embedding from the cache of ``bench/lfw_embeddings.py``
  (13,232 faces, 5,748 people; quality 1, as the cache has none); identity = folder name;
- otherwise synthetic faces: ``--people`` random identities (centre + noise giving cosine
  about 0.6 within a person, about 0 between people), ``--per`` faces each.

Protocol: a seeded shuffle; all but ``--new`` faces are clustered in one full run (timed);
then the held-back faces arrive in batches of ``--batch`` and each batch is one incremental
run (timed); finally a full re-run over everything (timed). BCubed F
(``facesearch/cluster/metrics.py``; unassigned faces count as singletons) of the
incremental result and of the full re-run against the true identities says what the
incremental path costs in quality.

    python bench/cluster_incremental.py --lfw ../shared/data/lfw
    python bench/cluster_incremental.py --people 600 --per 8
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facesearch.catalog import NewFace
from facesearch.cluster import bcubed_scores
from facesearch.services.clusters import Clusters
from facesearch.services.engine import Engine

LANDMARKS = [[30.0, 40.0], [70.0, 40.0], [50.0, 55.0], [35.0, 70.0], [65.0, 70.0]]


def synthetic(people: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, 512)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(people), per)
    x = centres[labels] + 0.036 * rng.standard_normal((len(labels), 512)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def lfw(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    sys.path.insert(0, str(Path(__file__).parent))
    from lfw_embeddings import load_or_compute

    _, labels, embeddings, how = load_or_compute(directory, progress=True)
    keep = how != "none"
    return embeddings[keep], np.unique(labels[keep], return_inverse=True)[1]


def store(engine: Engine, collection: str, vectors: np.ndarray, start: int) -> list[int]:
    """Faces into the catalog as ingest stores them (one photo each), then into the index."""
    info = engine.collection(collection)
    ids = []
    for i, vector in enumerate(vectors, start):
        digest = hashlib.sha256(f"bench face {i}".encode()).hexdigest()
        face = NewFace(0, (10.0, 10.0, 90.0, 90.0), LANDMARKS, 0.9, 1.0, (), vector, None)
        ids += engine.catalog.add_image(info.id, digest, f"/bench/{i}.jpg", 100, 100, 1, [face], engine.config.pack)
    engine.index_of(info)  # reconciled with the catalog before any timing
    return ids


def labels_of(clusters: Clusters, face_ids: list[int]) -> np.ndarray:
    placed = clusters.store.placements(face_ids)
    return np.array([placed[f].cluster_id if f in placed and placed[f].cluster_id is not None else -1
                     for f in face_ids], np.int64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, default=None, help="LFW folder (embeddings from the bench cache)")
    parser.add_argument("--people", type=int, default=600, help="synthetic identities (without --lfw)")
    parser.add_argument("--per", type=int, default=8, help="synthetic faces per identity")
    parser.add_argument("--new", type=int, default=200, help="faces held back and added incrementally")
    parser.add_argument("--batch", type=int, default=20, help="faces per incremental run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x, truth = lfw(args.lfw) if args.lfw else synthetic(args.people, args.per, args.seed)
    order = np.random.default_rng(args.seed).permutation(len(x))
    x, truth = x[order], truth[order]
    base = len(x) - args.new
    source = f"LFW ({args.lfw})" if args.lfw else f"synthetic ({args.people} people x {args.per})"
    print(f"{len(x):,} faces of {len(np.unique(truth)):,} people, {source}; {base:,} clustered first, "
          f"then {args.new} in batches of {args.batch}")

    with tempfile.TemporaryDirectory() as tmp, Engine.open(Path(tmp) / "home") as engine:
        engine.create_collection("bench", "benchmark faces")
        clusters = Clusters(engine)
        t = time.perf_counter()
        ids = store(engine, "bench", x[:base], 0)
        print(f"stored {base:,} faces in {time.perf_counter() - t:.1f} s (catalog + index)")
        full = clusters.run("bench", by="bench")
        print(f"full run:        {full.timings['total']:.3f} s ({full.faces_processed:,} faces; "
              + ", ".join(f"{k} {v:.3f}" for k, v in full.timings.items() if k != "total") + ")")
        times = []
        for start in range(base, len(x), args.batch):
            ids += store(engine, "bench", x[start:start + args.batch], start)
            run = clusters.run("bench", by="bench")
            assert run.mode == "incremental", run.reason
            times.append(run.timings["total"])
        times_ms = np.array(times) * 1000
        speedup = full.timings["total"] / np.median(times)
        print(f"incremental:     {len(times)} runs of {args.batch} new faces: median {np.median(times_ms):.0f} ms, "
              f"max {times_ms.max():.0f} ms ({speedup:.0f}x faster than the full run)")
        incremental = labels_of(clusters, ids)
        refull = clusters.run("bench", full=True, by="bench")
        print(f"full re-run:     {refull.timings['total']:.3f} s ({refull.faces_processed:,} faces)")
        again = labels_of(clusters, ids)
        for name, labels in (("after incremental runs", incremental), ("after the full re-run", again)):
            s = bcubed_scores(truth, labels)
            print(f"BCubed {name:<23} P {s.precision:.4f}  R {s.recall:.4f}  F {s.f1:.4f}  "
                  f"({len(np.unique(labels[labels >= 0])):,} clusters, {np.mean(labels < 0):.1%} unassigned)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
