"""Unknown-face clustering: sparse average-linkage over the k-NN graph, quality-aware, incremental.

The algorithm (batch and incremental are the same code: a batch run is one ``add`` of every
face into an empty :class:`ClusterState`):

1. **Graph.** Each face's ``k`` nearest neighbours (:mod:`facesearch.cluster.knn`: exact
   FAISS brute force; an approximate bucket graph beyond ``exact_limit``). Candidate edges
   are kNN pairs whose cosine is at least ``edge_threshold``; with ``mutual=True`` both faces
   must be in each other's k-NN list (a hub face that is everyone's neighbour gets no free
   edges).
2. **Merging.** Edges are taken strongest first. Two groups are merged only when their
   *average* pairwise cosine -- exactly ``sum_A . sum_B / (n_A n_B)`` from per-group sums
   of embeddings, O(d) per test -- is at least ``link_threshold``. One stray edge between
   two people (a look-alike, a mislabeled photo) cannot chain them: the whole of both
   groups has to agree, unlike single-linkage components or DBSCAN's density chaining.
   A group founded on **one comparison** (two single faces) rests on a single cosine: it needs
   the cosine of ``pair_fmr`` (6e-6), not only the link's (1e-5).
3. **Quality.** A face with quality below ``min_quality`` is a *leaf*: it may join one
   group, through its single best edge and only if it also passes the average-linkage test
   against that group's good faces, but its embedding never enters a group's sums, it is
   never used to merge two groups, and two poor faces never form a group by themselves.
   So a blurred face that resembles two people can sit in one of them but cannot bridge them.
4. **Unassigned.** Groups smaller than ``min_size`` keep label ``-1`` (they stay in the
   state: a later face can complete them).
5. **Cannot-link.** Faces of one image (photo or video frame; ``image_ids``) never share a
   group: a merge that would put two of them together is refused.
6. **Attachment (stage 2).** Steps 2-4 form tight *cores*. A face left out of every core then
   joins one when at least ``attach_support`` of its k nearest neighbours are members of that
   one core at or above the cosine of ``attach_fmr``, or ``attach_wide_support`` at a looser
   rate scaled by the core's size (and no other core has that support);
   the rule and its reasons are :mod:`facesearch.cluster.attach`. Attached faces are
   satellites: they never enter a core's sums or vote, so :meth:`ClusterState.labels` is a
   function of the cores and the k-NN lists, whatever order the faces came in.

Thresholds are false-match rates of the shipped calibration (``models/calibrations``), not
magic cosines; see :data:`DEFAULT_EDGE_FMR` for the measurement that chose them.

Incremental use (:meth:`ClusterState.add`): new faces are searched against everything
(their k-NN lists, and the lists of old faces they enter, are updated), and only the edges
that touch a new face are processed against the existing groups. Untouched groups keep
their labels and members; a group that grows keeps its label; when a new face makes two
labelled groups pass the linkage test (which only good faces can do) the merge is
reported. Edges among old faces are not revisited, so the result can differ from a batch
re-run in edge order only (the tests bound the difference); call :func:`cluster_faces`
for a full re-run. :meth:`ClusterState.save` / :meth:`ClusterState.load` keep the state
between runs (without the embeddings, which the caller's index already holds).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Set
from dataclasses import asdict
from pathlib import Path

import numpy as np

from facesearch.cluster.attach import attach_faces
from facesearch.cluster.knn import KnnGraph, NeighbourIndex, drop_self
from facesearch.cluster.linker import Linker
from facesearch.cluster.params import (  # noqa: F401 - part of this module's surface
    DEFAULT_ATTACH_FMR,
    DEFAULT_ATTACH_SUPPORT,
    DEFAULT_EDGE_FMR,
    DEFAULT_K,
    DEFAULT_LINK_FMR,
    DEFAULT_MIN_SIZE,
    DEFAULT_PACK,
    ClusterParams,
    ClusterResult,
    IncrementalUpdate,
    threshold_for_fmr,
)


class ClusterState(Linker):
    """Clusters of a growing set of faces (positions 0..n-1 in the order added)."""

    def __init__(self, params: ClusterParams | None = None, dim: int = 512) -> None:
        self.params = (params or ClusterParams()).resolved()
        self.dim = dim
        self._n = 0
        self._good = np.zeros(0, bool)
        self._image = np.zeros(0, np.int64)  # image id of each face (-1 = unknown): cannot-link
        self._images: dict[int, set[int]] = {}  # root -> image ids of a group of 2+ faces with any known
        self._parent = np.zeros(0, np.int64)
        self._size = np.zeros(0, np.int64)  # all members, valid at roots
        self._ngood = np.zeros(0, np.int64)  # good members, valid at roots
        self._sums: dict[int, np.ndarray] = {}  # root -> sum of good members' embeddings (groups of 2+ good)
        self._label: dict[int, int] = {}  # root -> public label, for groups of min_size+
        self._next_label = 0
        self._nbr_ids = np.zeros((0, self.params.k), np.int64)
        self._nbr_sims = np.zeros((0, self.params.k), np.float32)
        self._index = NeighbourIndex(dim, exact_limit=self.params.exact_limit, assign=self.params.assign)
        self.stats = {"edges": 0, "merges": 0, "refused_link": 0, "leaf_joins": 0, "blocked_poor": 0,
                      "cannot_link": 0}

    def __len__(self) -> int:
        return self._n

    # -- public -------------------------------------------------------------------------------

    def add(self, embeddings: np.ndarray, quality: np.ndarray | None = None, *,
            graph: KnnGraph | None = None, image_ids: np.ndarray | None = None,
            _adopt: bool = False) -> IncrementalUpdate:
        """Add faces and cluster them against everything so far (module docstring).

        ``graph`` may be given on the first add only: a k-NN graph of exactly ``embeddings``
        (at least ``params.k`` wide), e.g. to share one graph across parameter settings.
        ``image_ids`` (one per face, -1 = unknown): faces of one image never share a cluster.
        """
        timings: dict[str, float] = {}
        start = time.perf_counter()
        x = np.ascontiguousarray(np.atleast_2d(embeddings), np.float32)
        if x.shape[1] != self.dim:
            raise ValueError(f"embedding dimension {x.shape[1]} != {self.dim}")
        if not _adopt and self._n == 0 and np.shares_memory(x, embeddings):
            x = x.copy()  # the index keeps the first batch as is: never the caller's array
        m = len(x)
        if m == 0:
            return IncrementalUpdate(np.zeros(0, np.int64), np.zeros(0, np.int64), [], [], [], 0, {"total": 0.0})
        q = np.ones(m, np.float32) if quality is None else np.asarray(quality, np.float32).reshape(-1)
        if len(q) != m:
            raise ValueError("quality and embeddings differ in length")
        old_n = self._n
        before = self.labels() if old_n else np.zeros(0, np.int64)
        if graph is not None and (old_n or len(graph.ids) != m or graph.k < self.params.k):
            raise ValueError("a precomputed graph must cover exactly the first add, at least k wide")
        images = np.full(m, -1, np.int64) if image_ids is None else np.asarray(image_ids, np.int64).reshape(-1)
        if len(images) != m:
            raise ValueError("image_ids and embeddings differ in length")
        self._grow(q >= self.params.min_quality, images)
        self._index.add(x)
        new = np.arange(old_n, old_n + m)
        k = self.params.k

        t = time.perf_counter()
        if graph is not None:
            sims, ids = graph.sims[:, :k], graph.ids[:, :k]
        elif old_n == 0:
            sims, ids = self._index.self_graph(k, self.params.edge_threshold)
        else:
            sims, ids = self._index.search(x, k + 1, self.params.edge_threshold)
            sims, ids = drop_self(sims, ids, new, k)
        self._nbr_ids[new], self._nbr_sims[new] = ids, sims
        self._enter_old_lists(new, ids, sims, old_n)
        timings["knn"] = time.perf_counter() - t

        t = time.perf_counter()
        edges_i, edges_j, edges_s = self._new_edges(new, ids, sims)
        absorbed: list[tuple[int, int]] = []
        for i, j, s in zip(edges_i.tolist(), edges_j.tolist(), edges_s.tolist()):
            self._consider(i, j, s, absorbed)
        new_labels = self._label_new_groups(new)
        timings["cluster"] = time.perf_counter() - t

        after = self.labels()
        changed_old = int(np.sum(after[:old_n] != before)) if old_n else 0
        grown = sorted(set(after[new][after[new] >= 0].tolist()) & set(before[before >= 0].tolist()))
        timings["total"] = time.perf_counter() - start
        return IncrementalUpdate(new, after[new], new_labels, grown, absorbed, changed_old, timings)

    def labels(self) -> np.ndarray:
        """Current label of every face (``-1`` = unassigned): the cores, then attachment (stage 2)."""
        core = self.core_labels()
        if not self.params.attach_support or not self._n:
            return core
        faces = np.flatnonzero(core < 0)
        wide = None
        if self.params.attach_wide_support and (core >= 0).any():
            wide = self.params.wide_thresholds(np.bincount(core[core >= 0]))  # by each core's size
        attached, labels = attach_faces(
            core, faces, self._nbr_ids[faces], self._nbr_sims[faces], threshold=self.params.attach_threshold,
            support=self.params.attach_support, good=self._good[:self._n], image_ids=self._image[:self._n],
            wide_support=self.params.attach_wide_support, wide_thresholds=wide)
        core[attached] = labels
        return core

    def core_labels(self) -> np.ndarray:
        """Label of every face from stage 1 only (the cores: ``-1`` = not in a core)."""
        roots = self._roots(np.arange(self._n))
        out = np.full(self._n, -1, np.int64)
        if not self._label:
            return out
        keys = np.fromiter(self._label.keys(), np.int64)
        values = np.fromiter(self._label.values(), np.int64)
        lookup = np.full(self._n, -1, np.int64)
        lookup[keys] = values
        out = lookup[roots]
        return out

    def save(self, path: str | Path) -> None:
        """Write the state, without the embeddings (the caller's index holds them), to ``path`` (.npz).

        :meth:`load` it with the same embeddings in the same order, then keep calling :meth:`add`:
        a small ingest then costs a search of the new faces, not a re-run.
        """
        n = self._n
        arrays = {"parent": self._roots(np.arange(n)), "good": self._good[:n], "image": self._image[:n],
                  "nbr_ids": self._nbr_ids[:n],
                  "nbr_sims": self._nbr_sims[:n],
                  "label_roots": np.fromiter(self._label.keys(), np.int64, len(self._label)),
                  "label_values": np.fromiter(self._label.values(), np.int64, len(self._label)),
                  "meta": np.array(json.dumps({"params": asdict(self.params), "dim": self.dim,
                                               "next_label": self._next_label, "stats": self.stats}))}
        arrays.update({f"index_{k}": v for k, v in self._index.state().items()})
        tmp = Path(f"{path}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, embeddings: np.ndarray) -> ClusterState:
        """The state :meth:`save` wrote, over the same ``embeddings`` (same order)."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            state = cls(ClusterParams(**meta["params"]), dim=meta["dim"])
            parent = data["parent"]
            if len(parent) != len(embeddings):
                raise ValueError(f"{path}: state of {len(parent):,} faces, {len(embeddings):,} embeddings given")
            state._grow(data["good"].astype(bool), data["image"] if "image" in data.files else None)
            state._parent[:len(parent)] = parent
            state._nbr_ids[:len(parent)], state._nbr_sims[:len(parent)] = data["nbr_ids"], data["nbr_sims"]
            state._index.restore(embeddings, {k[6:]: data[k] for k in data.files if k.startswith("index_")})
            state._label = dict(zip(data["label_roots"].tolist(), data["label_values"].tolist()))
        state._next_label = meta["next_label"]
        state.stats = meta["stats"]
        roots = state._roots(np.arange(state._n))
        state._size[:state._n] = 0
        np.add.at(state._size, roots, 1)
        state._ngood[:state._n] = 0
        np.add.at(state._ngood, roots, state._good[:state._n].astype(np.int64))
        for face in np.flatnonzero((state._image[:state._n] >= 0) & (state._size[roots] > 1)).tolist():
            state._images.setdefault(int(roots[face]), set()).add(int(state._image[face]))
        members = np.flatnonzero(state._good[:state._n] & (state._size[roots] > 1))
        if len(members):  # every group of 2+ faces keeps the sum of its good members' embeddings
            order = members[np.argsort(roots[members], kind="stable")]
            groups, starts = np.unique(roots[order], return_index=True)
            sums = np.add.reduceat(state._x[order].astype(np.float64), starts, axis=0)
            state._sums = {int(r): sums[i] for i, r in enumerate(groups.tolist())}
        return state

    def result(self, graph_mode: str | None = None, timings: dict[str, float] | None = None) -> ClusterResult:
        return ClusterResult(self.labels(), self.params, graph_mode or self._index.describe(), dict(timings or {}),
                             dict(self.stats))

    # -- storage ------------------------------------------------------------------------------

    @property
    def _x(self) -> np.ndarray:
        return self._index.vectors

    def _grow(self, good: np.ndarray, images: np.ndarray | None = None) -> None:
        n, m = self._n, len(good)
        if n + m > len(self._good):
            cap = max(n + m, int(len(self._good) * 1.5) + 1024)
            for name, fill in (("_good", False), ("_image", -1), ("_parent", 0), ("_size", 0), ("_ngood", 0),
                               ("_nbr_ids", -1), ("_nbr_sims", -np.inf)):
                old = getattr(self, name)
                grown = np.full((cap,) + old.shape[1:], fill, old.dtype)
                grown[:n] = old[:n]
                setattr(self, name, grown)
        sl = slice(n, n + m)
        self._good[sl] = good
        self._image[sl] = -1 if images is None else images
        self._parent[sl] = np.arange(n, n + m)
        self._size[sl] = 1
        self._ngood[sl] = good.astype(np.int64)
        self._n = n + m

    def _enter_old_lists(self, new: np.ndarray, ids: np.ndarray, sims: np.ndarray, old_n: int) -> None:
        """Insert new faces into the k-NN lists of the old faces they now belong to."""
        if old_n == 0:
            return
        rows, cols = np.nonzero((ids >= 0) & (ids < old_n))
        targets, values, sources = ids[rows, cols], sims[rows, cols], new[rows]
        enter = values > self._nbr_sims[targets, -1]
        targets, values, sources = targets[enter], values[enter], sources[enter]
        order = np.argsort(targets, kind="stable")
        targets, values, sources = targets[order], values[order], sources[order]
        starts = np.flatnonzero(np.r_[True, targets[1:] != targets[:-1]]) if len(targets) else np.zeros(0, int)
        ends = np.r_[starts[1:], len(targets)]
        k = self.params.k
        for lo, hi in zip(starts.tolist(), ends.tolist()):
            target = int(targets[lo])
            all_ids = np.concatenate([self._nbr_ids[target], sources[lo:hi]])
            all_sims = np.concatenate([self._nbr_sims[target], values[lo:hi]])
            order = np.argsort(-all_sims, kind="stable")[:k]
            self._nbr_ids[target], self._nbr_sims[target] = all_ids[order], all_sims[order]

    def _new_edges(self, new: np.ndarray, ids: np.ndarray, sims: np.ndarray):
        """Candidate edges touching a new face, deduplicated, strongest first."""
        rows, cols = np.nonzero((ids >= 0) & (sims >= self.params.edge_threshold))
        i, j, s = new[rows], ids[rows, cols], sims[rows, cols]
        if self.params.mutual:
            back = (self._nbr_ids[j] == i[:, None]).any(axis=1)
            i, j, s = i[back], j[back], s[back]
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        _, first = np.unique(lo * max(self._n, 1) + hi, return_index=True)
        lo, hi, s = lo[first], hi[first], s[first]
        order = np.lexsort((hi, lo, -s))
        self.stats["edges"] += len(order)
        return lo[order], hi[order], s[order]

    # -- union-find ---------------------------------------------------------------------------

    def _find(self, i: int) -> int:
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    def _roots(self, idx: np.ndarray) -> np.ndarray:
        """Roots of many faces at once (vectorised pointer jumping; compresses as it goes)."""
        parent = self._parent
        roots = parent[np.asarray(idx, np.int64)]
        while True:
            up = parent[roots]
            if np.array_equal(up, roots):
                break
            roots = up
        if len(idx):
            parent[np.asarray(idx, np.int64)] = roots
        return roots

    def _sum(self, root: int) -> np.ndarray | None:
        """Sum of the good members' embeddings (None when the group has no good face)."""
        total = self._sums.get(root)
        if total is not None:
            return total
        if self._ngood[root] == 0:
            return None
        if self._ngood[root] == 1 and self._size[root] == 1:
            return self._x[root].astype(np.float64)
        raise AssertionError("group without a stored sum")  # every multi-face group stores one

    # -- what the linking rules read (Linker) ---------------------------------------------------

    def _face_good(self, face: int) -> bool:
        return bool(self._good[face])

    def _face_vector(self, face: int) -> np.ndarray:
        return self._x[face]

    def _alone(self, face: int) -> bool:
        return self._size[face] == 1 and self._parent[face] == face

    def _good_count(self, root: int) -> int:
        return int(self._ngood[root])

    def _images_of(self, root: int) -> Set[int]:
        found = self._images.get(root)
        if found is not None:
            return found
        if self._size[root] == 1 and self._image[root] >= 0:
            return {int(self._image[root])}
        return frozenset()

    def _union(self, ra: int, rb: int, absorbed: list[tuple[int, int]]) -> None:
        if (self._size[ra], -ra) < (self._size[rb], -rb):
            ra, rb = rb, ra  # ra: the larger group (older on ties) stays root
        total = None
        sa, sb = self._sum(ra), self._sum(rb)
        if sa is not None and sb is not None:
            total = sa + sb
        elif sa is not None or sb is not None:
            total = (sa if sa is not None else sb).copy()
        self._sums.pop(ra, None)
        self._sums.pop(rb, None)
        if total is not None:
            self._sums[ra] = total
        ia, ib = self._images_of(ra), self._images_of(rb)
        self._images.pop(rb, None)
        if ia or ib:
            merged = ia if isinstance(ia, set) and ra in self._images else set(ia)
            merged |= ib
            self._images[ra] = merged
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]
        self._ngood[ra] += self._ngood[rb]
        la, lb = self._label.pop(ra, None), self._label.pop(rb, None)
        if la is not None and lb is not None:
            keep, gone = (la, lb) if la < lb else (lb, la)  # the older label survives
            absorbed.append((keep, gone))
            self._label[ra] = keep
        elif la is not None or lb is not None:
            self._label[ra] = la if la is not None else lb

    def _label_new_groups(self, new: np.ndarray) -> list[int]:
        """Give labels to groups touched by ``new`` that reached ``min_size`` without one."""
        roots = np.unique(self._roots(new))
        fresh = [int(r) for r in roots if int(r) not in self._label and self._size[r] >= self.params.min_size]
        fresh.sort(key=lambda r: (-int(self._size[r]), r))
        labels = []
        for root in fresh:
            self._label[root] = self._next_label
            labels.append(self._next_label)
            self._next_label += 1
        return labels


def cluster_faces(embeddings: np.ndarray, quality: np.ndarray | None = None, params: ClusterParams | None = None,
                  *, graph: KnnGraph | None = None, image_ids: np.ndarray | None = None) -> ClusterResult:
    """Cluster ``embeddings`` (unit-length rows) from scratch; ``quality`` per face in 0..1 (None = all good);
    ``image_ids`` per face (faces of one image never share a cluster; None = all different)."""
    start = time.perf_counter()
    x = np.ascontiguousarray(np.atleast_2d(embeddings), np.float32)
    state = ClusterState(params, dim=x.shape[1])
    update = state.add(x, quality, graph=graph, image_ids=image_ids, _adopt=True)  # the state dies here: no copy needed
    timings = dict(update.timings)
    timings["total"] = time.perf_counter() - start
    mode = graph.mode if graph is not None else state._index.describe()
    return state.result(mode, timings)
