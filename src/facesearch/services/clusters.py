"""Clusters of unknown faces on an open Engine: group a collection's faces into unnamed identities,
keep the grouping up to date as faces arrive, and let a person correct and name it.

- :meth:`Clusters.run` (and :func:`cluster_collection`): the **first** run of a collection is a
  batch run of :func:`facesearch.cluster.cluster_faces` over every face's embedding and quality
  (quality-aware sparse average linkage over a k-NN graph: no n x n matrix). **Later** runs
  are incremental: only the faces added since (ids above the stored ``last_face_id``) are
  placed, each through its k nearest neighbours in the collection's vector index
  (``engine.index_of(info).search``), by the same rules as the batch algorithm -- an edge at
  or above the edge threshold is only a candidate; two groups join when their *average*
  cosine passes the link threshold; a face below ``min_quality`` is a leaf that may join one
  group but never bridges two; faces of one image never share a group; groups smaller than
  ``min_size`` stay unassigned, and a new face left out may then *attach* to a cluster its
  neighbours support (:func:`facesearch.cluster.attach.attach_faces`). The rules are the
  ones of :class:`facesearch.cluster.core.Linker`, called from here, not copied. (One
  difference from the array version: the catalog does not mark a face as attached, so in
  later incremental runs an attached face counts as a member of its cluster; a full run
  recomputes cores and attachments.) Existing
  clusters keep their ids; only the clusters the new faces touch are read. A full re-run
  (``full=True``, changed parameters, or more new faces than clustered ones) maps its groups
  back onto the existing clusters by overlap, so names and subject links survive it.
- a face placed by a person (merge, split, move, unassign) is **pinned**: no automatic run
  moves it, and a face a person took out of a cluster is left out of automatic runs.
- an erased face's placement goes with it (``ON DELETE CASCADE``); a cluster left empty is deleted.
- "name -> becomes a subject": :meth:`Clusters.to_subject` creates a subject in a gallery,
  enrols the cluster's best faces from their existing face ids (:meth:`Subjects.enroll_faces`)
  and links the cluster to it.

Who may do what, the audit log and opt-out are the governance layer's
(:mod:`facesearch.governance.clusters`); every method here takes an optional ``hide`` (the
opt-out mask) so that suppressed faces are neither clustered nor shown.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from facesearch.catalog import CatalogError, CollectionInfo
from facesearch.catalog.clusters import ClusterRow, ClusterStateInfo, ClusterStore, FaceRows, RunWrite
from facesearch.cluster import ClusterParams, cluster_faces
from facesearch.errors import FacesearchError
from facesearch.services.cluster_groups import Groups
from facesearch.services.cluster_results import (  # noqa: F401 - part of this module's surface
    ClusterDetail,
    ClusterError,
    ClusterInfo,
    ClusterMember,
    ClusterOverview,
    ClusterRun,
    EditResult,
    MergeResult,
    params_key,
)
from facesearch.services.engine import Engine

#: mask of the embeddings that must not be clustered or shown (opt-out): (n, d) -> (n,) bool
Hide = Callable[[np.ndarray], np.ndarray]

#: sample faces shown per cluster in a listing (the best by quality)
SAMPLES = 8
#: an incremental run places at most this many new faces before a batch run is cheaper (or more than
#: the faces already clustered)
INCREMENTAL_LIMIT = 1_000
#: faces enrolled when a cluster becomes a subject (its best by quality)
MAX_SUBJECT_FACES = 50


class Clusters:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = ClusterStore(engine.catalog)

    # -- parameters -------------------------------------------------------------------------------------

    def params(self, **overrides) -> ClusterParams:
        """The clustering parameters of this home: the defaults (chosen on LFW), thresholds from its calibration."""
        params = ClusterParams(pack=self.engine.config.pack, **overrides)
        try:
            return params.resolved(self.engine.calibration)
        except ValueError as exc:
            raise FacesearchError(f"cannot cluster: {exc}") from exc

    # -- runs ---------------------------------------------------------------------------------------------

    def run(self, collection: str, *, full: bool = False, by: str = "", hide: Hide | None = None,
            params: ClusterParams | None = None, wait: bool = True) -> ClusterRun:
        """Cluster the collection: incrementally when it was clustered before, else (or with ``full``) in full.

        Holds the home's writer lock (``wait=False``: refuse while an ingest runs), so no face can
        be committed below the id a run records as placed."""
        with self.engine.writing(wait=wait):
            return self._run(collection, full, by, hide, params)

    def _run(self, collection: str, full: bool, by: str, hide: Hide | None,
             params: ClusterParams | None) -> ClusterRun:
        start = time.perf_counter()
        info = self.engine.collection(collection)
        params = params.resolved(self.engine.calibration) if params is not None else self.params()
        key = params_key(params)
        state = self.store.state(info.id)
        reason = ""
        if full:
            reason = "a full run was asked for"
        elif state is None:
            reason = "first run of this collection"
        elif state.params != key:
            reason = "the clustering parameters changed since the last run"
        elif params.mutual:
            reason = "mutual k-NN needs the whole graph"
        t = time.perf_counter()
        new = None
        if not reason:
            new = self.store.face_rows(info.id, after_id=state.last_face_id)
            if len(new) > max(INCREMENTAL_LIMIT, state.faces_processed):
                reason = (f"{len(new):,} new faces, more than the {state.faces_processed:,} clustered before: "
                          "a batch run is cheaper")
        read = time.perf_counter() - t
        if reason:
            run = self._full(info, params, key, by, hide, reason)
        else:
            run = self._incremental(info, params, key, by, hide, new, state)
        run.timings["read"] = round(run.timings.get("read", 0.0) + read, 6)
        clusters, in_clusters = self.store.counts(info.id)
        faces = self.engine.collection(collection).faces
        run.faces, run.clusters, run.in_clusters, run.unassigned = faces, clusters, in_clusters, faces - in_clusters
        run.params = params.describe()
        run.timings["total"] = round(time.perf_counter() - start, 6)
        return run

    def _hidden(self, rows: FaceRows, hide: Hide | None) -> np.ndarray:
        if hide is None or not len(rows):
            return np.zeros(len(rows), bool)
        return np.asarray(hide(rows.embeddings), bool)

    def _full(self, info: CollectionInfo, params: ClusterParams, key: dict, by: str, hide: Hide | None,
              reason: str) -> ClusterRun:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        rows = self.store.face_rows(info.id)
        members = self.store.members(info.id)
        previous = dict(zip(members.face_ids.tolist(), members.cluster_ids.tolist()))
        pinned = {f for f, p in zip(members.face_ids.tolist(), members.pinned.tolist()) if p}
        hidden = self._hidden(rows, hide)
        # faces a person took out of every cluster stay out; opted-out faces are not clustered at all
        pinned_out = np.array([f in pinned and previous[f] < 0 for f in rows.ids.tolist()], bool)
        use = rows.take(~hidden & ~pinned_out)
        timings["read"] = time.perf_counter() - t
        run = ClusterRun(info.name, "full", reason, 0, len(use), int(hidden.sum()), 0, 0, 0)
        groups: list[tuple[int | None, list[int]]] = []
        if len(use):
            result = cluster_faces(use.embeddings, use.quality, params, image_ids=use.image_ids)
            run.graph, run.stats = result.graph_mode, dict(result.stats)
            timings["knn"], timings["cluster"] = result.timings.get("knn", 0.0), result.timings.get("cluster", 0.0)
            labels = result.labels
            by_label: dict[int, list[int]] = {}
            for face_id, label in zip(use.ids.tolist(), labels.tolist()):
                if label >= 0:
                    by_label.setdefault(label, []).append(face_id)
            # map each new group onto the existing cluster it shares most faces with (each cluster once),
            # so that ids, names and subject links survive a re-run
            overlaps = []
            for label, faces in by_label.items():
                for cluster_id, count in Counter(previous[f] for f in faces if previous.get(f, -1) >= 0).items():
                    overlaps.append((-count, cluster_id, label))
            target: dict[int, int] = {}
            used: set[int] = set()
            for _, cluster_id, label in sorted(overlaps):
                if label not in target and cluster_id not in used:
                    target[label] = cluster_id
                    used.add(cluster_id)
            for label in sorted(by_label, key=lambda lb: (-len(by_label[lb]), lb)):
                free = [f for f in by_label[label] if f not in pinned]  # a person's placements stay
                if free:
                    groups.append((target.get(label), free))
        t = time.perf_counter()
        created = self.store.write_run(RunWrite(info.id, by, "full", key, self.store.max_face_id(info.id),
                                                len(use), clear_unpinned=True, groups=groups))
        timings["write"] = time.perf_counter() - t
        run.new_clusters = sorted(created.values())
        run.grown = sorted({g[0] for g in groups if g[0] is not None})
        run.timings = {k: round(v, 6) for k, v in timings.items()}
        return run

    def _incremental(self, info: CollectionInfo, params: ClusterParams, key: dict, by: str, hide: Hide | None,
                     new: FaceRows, state: ClusterStateInfo) -> ClusterRun:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        last_id = max(state.last_face_id, int(new.ids.max()) if len(new) else 0)
        placed = self.store.placements(new.ids.tolist())
        hidden = self._hidden(new, hide)
        fresh = new.take(~hidden & np.array([f not in placed for f in new.ids.tolist()], bool))
        run = ClusterRun(info.name, "incremental", f"{len(new):,} face(s) added since the last run", 0, len(fresh),
                         int(hidden.sum()), 0, 0, 0)
        stats = {"edges": 0, "merges": 0, "leaf_joins": 0, "refused_link": 0, "blocked_poor": 0,
                 "refused_locked": 0, "cannot_link": 0, "attached": 0}
        if not len(fresh):
            self.store.write_run(RunWrite(info.id, by, "incremental", key, last_id, state.faces_processed))
            run.mode = "none" if not len(new) else "incremental"
            run.reason = "no new faces since the last run" if not len(new) else run.reason
            run.timings = {k: round(v, 6) for k, v in timings.items()}
            run.stats = stats
            return run
        timings["read"] = time.perf_counter() - t

        # k nearest neighbours of each new face in the collection's index (the new faces are in it too)
        t = time.perf_counter()
        index = self.engine.index_of(info)
        with self.engine.mutex:
            hits = index.search(fresh.embeddings, params.k + 1)
        timings["knn"] = time.perf_counter() - t

        t = time.perf_counter()
        edge = params.edge_threshold
        fresh_ids = set(fresh.ids.tolist())
        candidates: list[tuple[float, int, int]] = []
        for row, face_id in enumerate(fresh.ids.tolist()):
            kept = 0
            for other, score in zip(hits.ids[row].tolist(), hits.scores[row].tolist()):
                if other < 0 or other == face_id or score < edge:
                    continue
                if kept == params.k:
                    break
                kept += 1
                candidates.append((score, min(face_id, other), max(face_id, other)))
        old_ids = {f for _, a, b in candidates for f in (a, b)} - fresh_ids
        old_placed = self.store.placements(old_ids)
        touched = {p.cluster_id for p in old_placed.values() if p.cluster_id is not None}
        loose = [f for f in old_ids if f not in old_placed]  # old faces in no cluster: a new face may complete them
        cluster_rows = self.store.clusters(ids=touched)
        cluster_faces_ = self.store.cluster_faces(touched)
        locked = self.store.pinned_clusters(touched) | {c for c, r in cluster_rows.items()
                                                         if r.name is not None or r.subject_id is not None}
        everyone = self.store.face_rows(info.id, ids=[f for fs in cluster_faces_.values() for f in fs] + loose)
        shown = everyone.take(~self._hidden(everyone, hide))
        vector = dict(zip(shown.ids.tolist(), shown.embeddings))
        quality = dict(zip(shown.ids.tolist(), shown.quality.tolist()))
        image = dict(zip(shown.ids.tolist(), shown.image_ids.tolist()))
        for face_id, x, q, img in zip(fresh.ids.tolist(), fresh.embeddings, fresh.quality.tolist(),
                                      fresh.image_ids.tolist()):
            vector[face_id], quality[face_id], image[face_id] = x, q, img

        good = {f: q >= params.min_quality for f, q in quality.items()}
        groups = Groups(params, vector, good, image)
        for cluster_id in sorted(touched):
            faces = [f for f in cluster_faces_.get(cluster_id, []) if f in vector]
            if faces:
                groups.add(faces, cluster_id, cluster_id in locked)
        for face_id in sorted(set(loose) & set(vector)) + fresh.ids.tolist():
            groups.add([face_id])
        node = groups.node

        best: dict[tuple[int, int], float] = {}
        for score, a, b in candidates:
            if a in node and b in node and score > best.get((a, b), -np.inf):
                best[(a, b)] = score
        edges = sorted(best.items(), key=lambda e: (-e[1], e[0][0], e[0][1]))
        groups.stats["edges"] = len(edges)
        for (a, b), score in edges:
            groups._consider(a, b, score, [])
        groups.attach_left_out(fresh, hits)
        stats = groups.stats

        write = RunWrite(info.id, by, "incremental", key, last_id, state.faces_processed + len(fresh))
        grown: set[int] = set()
        for root in sorted({groups.find(n) for n in set(node.values())}):
            faces = groups.faces[root]
            existing = sorted(groups.clusters[root])
            if existing:
                keep = existing[0]  # the oldest cluster id survives a merge
                write.merges.extend((keep, other) for other in existing[1:])
                if faces:
                    write.groups.append((keep, sorted(faces)))
                if faces or len(existing) > 1:
                    grown.add(keep)
            elif groups.size[root] >= params.min_size:
                write.groups.append((None, sorted(faces)))
        timings["cluster"] = time.perf_counter() - t
        t = time.perf_counter()
        created = self.store.write_run(write)
        timings["write"] = time.perf_counter() - t
        run.new_clusters = sorted(created.values())
        run.grown = sorted(grown)
        run.merged = write.merges
        run.graph = f"the collection's vector index ({len(fresh):,} queries, k {params.k})"
        run.stats = stats
        run.timings = {k: round(v, 6) for k, v in timings.items()}
        return run

    # -- reading --------------------------------------------------------------------------------------------

    def _visible_members(self, collection_id: int, hide: Hide | None):
        members = self.store.members(collection_id)
        keep = members.cluster_ids >= 0
        if hide is not None and keep.any():
            rows = self.store.face_rows(collection_id, ids=members.face_ids[keep].tolist())
            hidden = set(rows.ids[self._hidden(rows, hide)].tolist())
            keep &= np.array([f not in hidden for f in members.face_ids.tolist()], bool)
        return members, keep

    @staticmethod
    def _info(row: ClusterRow, faces: list[tuple[float, int, bool]], samples: int) -> ClusterInfo:
        faces = sorted(faces, key=lambda f: (-f[0], f[1]))
        return ClusterInfo(row.id, row.collection, row.name, row.subject_id, len(faces), sum(f[2] for f in faces),
                           row.created_by, row.created_at, row.updated_at, tuple(f[1] for f in faces[:samples]))

    def overview(self, collection: str, *, hide: Hide | None = None, limit: int | None = None,
                 samples: int = SAMPLES) -> ClusterOverview:
        """The collection's clusters, largest first, each with its best faces as samples."""
        info = self.engine.collection(collection)
        members, keep = self._visible_members(info.id, hide)
        by_cluster: dict[int, list[tuple[float, int, bool]]] = {}
        for face_id, cluster_id, pinned, q in zip(members.face_ids[keep].tolist(), members.cluster_ids[keep].tolist(),
                                                  members.pinned[keep].tolist(), members.quality[keep].tolist()):
            by_cluster.setdefault(cluster_id, []).append((q, face_id, pinned))
        rows = self.store.clusters(info.id)
        infos = [self._info(rows[c], faces, samples) for c, faces in by_cluster.items() if c in rows]
        infos.sort(key=lambda c: (-c.size, c.id))
        in_clusters = sum(c.size for c in infos)
        placed_anywhere = int((members.cluster_ids >= 0).sum())
        return ClusterOverview(info.name, info.faces, in_clusters, info.faces - placed_anywhere,
                               infos[:limit] if limit else infos, len(infos), self.store.state(info.id))

    def cluster(self, cluster_id: int, *, hide: Hide | None = None) -> ClusterDetail:
        row = self.store.cluster(cluster_id)
        faces = self.store.cluster_faces([cluster_id]).get(cluster_id, [])
        shown = self.store.face_rows(row.collection_id, ids=faces)
        shown_ids = shown.ids[~self._hidden(shown, hide)].tolist()
        infos = self.engine.catalog.faces(shown_ids)
        placements = self.store.placements(shown_ids)
        members = [ClusterMember(f, placements[f].pinned, infos[f].quality, placements[f].assigned_by,
                                 infos[f].image_id, bool(infos[f].thumbnail)) for f in shown_ids if f in infos]
        members.sort(key=lambda m: (-m.quality, m.face_id))
        info = self._info(row, [(m.quality, m.face_id, m.pinned) for m in members], SAMPLES)
        return ClusterDetail(info, members)

    def cluster_of(self, face_id: int) -> int | None:
        placement = self.store.placements([face_id]).get(face_id)
        return placement.cluster_id if placement else None

    # -- a person's edits (pinned) ----------------------------------------------------------------------------

    def _same_collection(self, collection_id: int, face_ids: list[int]) -> list[int]:
        ids = list(dict.fromkeys(int(f) for f in face_ids))
        if not ids:
            raise ClusterError("no faces given")
        infos = self.engine.catalog.faces(ids)
        missing = [f for f in ids if f not in infos]
        if missing:
            raise CatalogError(f"no face with id {missing[0]}")
        other = [f for f in ids if infos[f].collection_id != collection_id]
        if other:
            raise ClusterError(f"face {other[0]} is in collection {infos[other[0]].collection!r}, "
                               "not in the cluster's collection")
        return ids

    def merge(self, cluster_ids: list[int], *, into: int | None = None, by: str = "") -> MergeResult:
        ids = list(dict.fromkeys(int(c) for c in cluster_ids))
        if into is not None and into not in ids:
            ids.insert(0, int(into))
        if len(ids) < 2:
            raise ClusterError("merging needs at least two different clusters")
        rows = [self.store.cluster(c) for c in ids]
        if len({r.collection_id for r in rows}) > 1:
            raise ClusterError("clusters of different collections cannot be merged")
        if into is None:
            sizes = {c: len(f) for c, f in self.store.cluster_faces(ids).items()}
            into = min(ids, key=lambda c: (-sizes.get(c, 0), c))  # the largest (the oldest on a tie)
        others = [c for c in ids if c != into]
        moved = self.store.merge(into, others, by)
        return MergeResult(into, others, moved)

    def split(self, cluster_id: int, face_ids: list[int], *, by: str = "") -> EditResult:
        """Take these faces out of the cluster into a new one."""
        row = self.store.cluster(cluster_id)
        ids = self._same_collection(row.collection_id, face_ids)
        members = set(self.store.cluster_faces([cluster_id]).get(cluster_id, []))
        outside = [f for f in ids if f not in members]
        if outside:
            raise ClusterError(f"face {outside[0]} is not in cluster {cluster_id}")
        if members <= set(ids):
            raise ClusterError("that is the whole cluster: split off some of its faces, not all")
        new_id = self.store.create(row.collection_id, ids, by)
        return EditResult(new_id, ids, [])

    def new_cluster(self, collection: str, face_ids: list[int], *, by: str = "", name: str | None = None) -> int:
        """A new cluster of these faces (a person's grouping), taken from wherever they were."""
        info = self.engine.collection(collection)
        return self.store.create(info.id, self._same_collection(info.id, face_ids), by, name=_clean(name))

    def move(self, face_ids: list[int], cluster_id: int, *, by: str = "") -> EditResult:
        row = self.store.cluster(cluster_id)
        ids = self._same_collection(row.collection_id, face_ids)
        return EditResult(cluster_id, ids, self.store.place(row.collection_id, ids, cluster_id, by))

    def unassign(self, face_ids: list[int], *, by: str = "") -> EditResult:
        """Take faces out of every cluster, for good: automatic runs leave them out."""
        ids = list(dict.fromkeys(int(f) for f in face_ids))
        infos = self.engine.catalog.faces(ids)
        missing = [f for f in ids if f not in infos]
        if missing or not ids:
            raise CatalogError(f"no face with id {missing[0]}" if missing else "no faces given")
        emptied: list[int] = []
        for collection_id in sorted({infos[f].collection_id for f in ids}):
            mine = [f for f in ids if infos[f].collection_id == collection_id]
            emptied += self.store.place(collection_id, mine, None, by)
        return EditResult(None, ids, emptied)

    def name(self, cluster_id: int, name: str | None) -> ClusterRow:
        self.store.set_name(cluster_id, _clean(name))
        return self.store.cluster(cluster_id)

    # -- a cluster becomes a subject -----------------------------------------------------------------------------

    def subject_faces(self, cluster_id: int, *, hide: Hide | None = None, limit: int = MAX_SUBJECT_FACES) -> list[int]:
        """The cluster's faces to enrol, best quality first."""
        return [m.face_id for m in self.cluster(cluster_id, hide=hide).faces[:limit]]

    def to_subject(self, cluster_id: int, gallery: str, *, label: str | None = None, attributes: dict | None = None,
                   by: str = "", hide: Hide | None = None):
        """Create a subject (gallery created if missing) from the cluster's faces and link the two.

        Returns (SubjectInfo, EnrolReport). A cluster already linked to a subject enrols its new
        faces there instead."""
        from facesearch.services.subjects import Subjects

        row = self.store.cluster(cluster_id)
        label = _clean(label) or row.name
        subjects = Subjects(self.engine)
        linked = subjects.store.subjects(ids=[row.subject_id]) if row.subject_id is not None else []
        if linked:
            subject = linked[0]
        else:
            if not label:
                raise ClusterError(f"cluster {cluster_id} has no name: name it, or give the subject a label")
            subject = subjects.add(gallery, label, attributes, by, create_gallery=True)
        enrolled = {f.face_id for f in subjects.faces(subject.id)}
        faces = [f for f in self.subject_faces(cluster_id, hide=hide) if f not in enrolled]
        report = subjects.enroll_faces(subject.id, faces, created_by=by, hide=hide)
        self.store.link_subject(cluster_id, subject.id, None if row.name else label)
        return subjects.subject(subject.id), report


def _clean(name: str | None) -> str | None:
    name = (name or "").strip()
    if len(name) > 200:
        raise ClusterError("a cluster name is at most 200 characters")
    return name or None


def cluster_collection(engine: Engine, name: str, *, full: bool = False, by: str = "",
                       hide: Hide | None = None, wait: bool = True) -> ClusterRun:
    """Cluster a collection's faces: incrementally after the first run (see :class:`Clusters`)."""
    return Clusters(engine).run(name, full=full, by=by, hide=hide, wait=wait)


__all__ = ["ClusterDetail", "ClusterError", "ClusterInfo", "ClusterMember", "ClusterOverview", "ClusterRun",
           "Clusters", "EditResult", "MergeResult", "cluster_collection", "params_key"]
