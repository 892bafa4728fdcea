"""The comparison baseline: Immich's facial-recognition job (incremental DBSCAN), re-implemented.

Followed from immich-app/immich, ``server/src/services/person.service.ts``
(``handleQueueRecognizeFaces`` and ``handleRecognizeFaces``) and
``server/src/repositories/search.repository.ts`` (``searchFaces``), with the defaults of
``server/src/config.ts`` (``facialRecognition: maxDistance 0.5, minFaces 3``):

- A "force" run unassigns every face and queues one job per face in catalogue order.
- Each job: ``matches`` = the ``minFaces`` nearest faces (the face itself included, it is
  at distance 0) among those at cosine distance ``<= maxDistance`` (``<=>`` = 1 - cosine).
- ``minFaces > 1`` and only the face itself matched: skipped for good (stays unassigned).
- Fewer than ``minFaces`` matches ("not core") on the first visit: re-queued at the end of
  the queue as *deferred*.
- Person = the first match (nearest first) that already has a person; if none, the
  nearest face within ``maxDistance`` that has a person (``numResults: 1, hasPerson``).
- Core face and still no person: a new person is created for it. A deferred non-core face
  with no person in reach stays unassigned.

What differs, and why it does not favour facesearch: Immich searches a vector index
(pgvecto.rs / VectorChord, approximate); here the neighbour lists are exact up to
``exact_limit`` (LFW's 13k) -- if anything that helps the baseline. Beyond it the
neighbour lists come from the same IVF graph facesearch uses, truncated to ``k``, so the
``hasPerson`` look-up only sees a face's ``k`` nearest within the distance (noted by the
bench). Archived assets and per-user scoping do not apply here.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import faiss
import numpy as np

#: Immich's defaults (server/src/config.ts).
IMMICH_MAX_DISTANCE = 0.5
IMMICH_MIN_FACES = 3


@dataclass
class BaselineResult:
    labels: np.ndarray  # (n,) int64, -1 = no person
    seconds: float
    neighbour_mode: str
    timings: dict[str, float] = field(default_factory=dict)


def radius_neighbours(embeddings: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact CSR lists of every face within cosine distance ``max_distance`` (itself included),
    nearest first: ``(offsets, ids)`` with face ``i``'s list at ``ids[offsets[i]:offsets[i + 1]]``."""
    x = np.ascontiguousarray(embeddings, np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    # FAISS keeps inner products strictly above the radius; Immich keeps distance <= max.
    lims, sims, ids = index.range_search(x, float(np.nextafter(np.float32(1.0 - max_distance), np.float32(-1))))
    offsets = lims.astype(np.int64)
    out = np.empty_like(ids)
    for i in range(len(x)):
        lo, hi = offsets[i], offsets[i + 1]
        out[lo:hi] = ids[lo:hi][np.argsort(-sims[lo:hi], kind="stable")]
    return offsets, out


def knn_neighbours(ids: np.ndarray, sims: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """The same CSR lists from a k-NN result that includes each face itself (approximate at scale)."""
    keep = (ids >= 0) & (sims >= 1.0 - max_distance)
    offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    return offsets, ids[keep]


def immich_cluster(offsets: np.ndarray, neighbours: np.ndarray, min_faces: int = IMMICH_MIN_FACES,
                   order: np.ndarray | None = None) -> np.ndarray:
    """Run Immich's job queue over precomputed within-distance lists (module docstring)."""
    n = len(offsets) - 1
    person = np.full(n, -1, np.int64)
    queue = deque((int(i), False) for i in (range(n) if order is None else order))
    next_person = 0
    while queue:
        face, deferred = queue.popleft()
        if person[face] >= 0:
            continue
        reach = neighbours[offsets[face]:offsets[face + 1]]
        matches = reach[:min_faces]
        if min_faces > 1 and len(matches) <= 1:
            continue
        core = len(matches) >= min_faces
        if not core and not deferred:
            queue.append((face, True))
            continue
        found = person[matches]
        found = found[found >= 0]
        if len(found) == 0:  # the hasPerson search: nearest face with a person within maxDistance
            found = person[reach]
            found = found[found >= 0]
        if len(found):
            person[face] = found[0]
        elif core:
            person[face] = next_person
            next_person += 1
    return person


def immich_style_cluster(embeddings: np.ndarray, *, max_distance: float = IMMICH_MAX_DISTANCE,
                         min_faces: int = IMMICH_MIN_FACES, order: np.ndarray | None = None,
                         knn: tuple[np.ndarray, np.ndarray] | None = None) -> BaselineResult:
    """Immich-style clustering of ``embeddings``; exact radius search unless ``knn=(ids, sims)``
    (rows including the face itself) is given for large sets."""
    start = time.perf_counter()
    if knn is None:
        offsets, neighbours = radius_neighbours(embeddings, max_distance)
        mode = "exact radius search"
    else:
        offsets, neighbours = knn_neighbours(knn[0], knn[1], max_distance)
        mode = f"k-NN lists (k {knn[0].shape[1]}) within the distance"
    searched = time.perf_counter()
    labels = immich_cluster(offsets, neighbours, min_faces, order)
    end = time.perf_counter()
    return BaselineResult(labels, end - start, mode, {"neighbours": searched - start, "jobs": end - searched})
