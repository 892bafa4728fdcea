"""Clusters of a collection's faces in the catalog: which face is in which group, which of those
placements a person made (``pinned``: automatic runs never change them), and how far
automatic clustering of each collection has got (what the next incremental run starts from).

A cluster id is never reused (SQLite AUTOINCREMENT, a PostgreSQL sequence), so an id in the
audit log always names the same group. Erasing a face deletes its placement (``ON DELETE
CASCADE``); erasing a collection deletes its clusters and its state. A cluster's name is
typed by a person: it lives here only and is never written to the audit log.

Tables (ORM classes in :mod:`facesearch.catalog.schema`) are created by migration ``0005_clusters``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from facesearch.catalog.schema import (
    Cluster,
    ClusterFace,
    ClusterRunState,
    ClusterSuggestionDecision,
    Collection,
    FaceRecord,
    utcnow,
)
from facesearch.catalog.store import Catalog, CatalogError

_IN_CHUNK = 5_000  # ids per IN (...) list: SQLite's variable limit is 32,766


@dataclass(frozen=True)
class ClusterRow:
    """A cluster as stored (no counts)."""

    id: int
    collection_id: int
    collection: str
    name: str | None
    subject_id: int | None
    created_by: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Placement:
    """Where one face is: ``cluster_id`` None with ``pinned`` = kept out of every cluster by a person."""

    face_id: int
    cluster_id: int | None
    pinned: bool
    assigned_by: str = ""


#: Video frames get cannot-link keys of their own, above every photo's image id (bit 62 set).
_FRAME_KEYS = 1 << 62


def shot_key(image_id: int, timestamp_s: float | None) -> int:
    """The cannot-link key of a face: its photo, or for a video face its frame.

    Two faces of one photo, or of one video frame, are two people (siblings, twins, a poster):
    they never share a cluster. Faces of one video at different times may well be one person
    (one track), so the video's image id alone would keep a person's own frames apart."""
    if timestamp_s is None:
        return int(image_id)
    millis = min(max(round(timestamp_s * 1000), 0), (1 << 30) - 1)  # up to 12 days into a video
    return _FRAME_KEYS | (int(image_id) & ((1 << 32) - 1)) << 30 | millis


@dataclass
class FaceRows:
    """Faces read for clustering, in id order."""

    ids: np.ndarray  # (n,) int64
    embeddings: np.ndarray  # (n, d) float32
    quality: np.ndarray  # (n,) float32
    image_ids: np.ndarray  # (n,) int64: cannot-link keys (shot_key): one photo's or one frame's faces never share

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, mask: np.ndarray) -> FaceRows:
        return FaceRows(self.ids[mask], self.embeddings[mask], self.quality[mask], self.image_ids[mask])


@dataclass(frozen=True)
class MemberRows:
    """Every placed face of a collection: face id, cluster id (-1 = kept out), pinned, quality."""

    face_ids: np.ndarray
    cluster_ids: np.ndarray
    pinned: np.ndarray
    quality: np.ndarray


@dataclass(frozen=True)
class ClusterStateInfo:
    collection_id: int
    params: dict
    last_face_id: int
    faces_processed: int
    mode: str
    ran_by: str
    ran_at: str


@dataclass
class RunWrite:
    """What one clustering run changes, written in one transaction by :meth:`ClusterStore.write_run`."""

    collection_id: int
    ran_by: str
    mode: str
    params: dict
    last_face_id: int
    faces_processed: int
    clear_unpinned: bool = False  # a full run: every automatic placement is recomputed
    groups: list[tuple[int | None, list[int]]] = field(default_factory=list)  # (cluster or None = new, faces)
    merges: list[tuple[int, int]] = field(default_factory=list)  # (kept, absorbed)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _chunks(ids: Iterable[int], size: int = _IN_CHUNK):
    ids = [int(i) for i in ids]
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


class ClusterStore:
    """Database operations on clusters, face placements and per-collection clustering state."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def session(self) -> Session:
        return self.catalog.session()

    # -- faces to cluster -----------------------------------------------------------------------------

    def face_rows(self, collection_id: int, *, after_id: int = 0, ids: Iterable[int] | None = None,
                  chunk: int = 20_000) -> FaceRows:
        """Embeddings and quality of a collection's faces with id > ``after_id`` (or of ``ids``), by id."""
        query = (select(FaceRecord.id, FaceRecord.embedding, FaceRecord.quality, FaceRecord.image_id,
                        FaceRecord.timestamp_s)
                 .where(FaceRecord.collection_id == collection_id))
        queries = []
        if ids is not None:
            queries = [query.where(FaceRecord.id.in_(part)) for part in _chunks(sorted(set(ids)))]
        else:
            queries = [query.where(FaceRecord.id > after_id)]
        out_ids, vectors, quality, images = [], [], [], []
        with self.session() as s:
            for q in queries:
                for part in s.execute(q.order_by(FaceRecord.id)).yield_per(chunk).partitions(chunk):
                    out_ids.append(np.fromiter((r[0] for r in part), np.int64, len(part)))
                    vectors.append(np.frombuffer(b"".join(r[1] for r in part), "<f4").reshape(len(part), -1))
                    quality.append(np.fromiter((r[2] for r in part), np.float32, len(part)))
                    images.append(np.fromiter((shot_key(r[3], r[4]) for r in part), np.int64, len(part)))
        if not out_ids:
            return FaceRows(np.zeros(0, np.int64), np.zeros((0, 512), np.float32), np.zeros(0, np.float32),
                            np.zeros(0, np.int64))
        ids_all = np.concatenate(out_ids)
        order = np.argsort(ids_all, kind="stable")
        return FaceRows(ids_all[order], np.ascontiguousarray(np.concatenate(vectors)[order], np.float32),
                        np.concatenate(quality)[order], np.concatenate(images)[order])

    def max_face_id(self, collection_id: int) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.max(FaceRecord.id)).where(FaceRecord.collection_id == collection_id))
                       or 0)

    # -- placements -------------------------------------------------------------------------------------

    def placements(self, face_ids: Iterable[int]) -> dict[int, Placement]:
        out: dict[int, Placement] = {}
        with self.session() as s:
            for part in _chunks(face_ids):
                for row in s.scalars(select(ClusterFace).where(ClusterFace.face_id.in_(part))):
                    out[row.face_id] = Placement(row.face_id, row.cluster_id, bool(row.pinned), row.assigned_by)
        return out

    def members(self, collection_id: int) -> MemberRows:
        """Every placed face of the collection (one query; what listing and full runs start from)."""
        with self.session() as s:
            rows = s.execute(select(ClusterFace.face_id, ClusterFace.cluster_id, ClusterFace.pinned,
                                    FaceRecord.quality)
                             .join(FaceRecord, FaceRecord.id == ClusterFace.face_id)
                             .where(FaceRecord.collection_id == collection_id)
                             .order_by(ClusterFace.face_id)).all()
        return MemberRows(np.array([r[0] for r in rows], np.int64),
                          np.array([-1 if r[1] is None else r[1] for r in rows], np.int64),
                          np.array([bool(r[2]) for r in rows], bool),
                          np.array([r[3] for r in rows], np.float32))

    def cluster_faces(self, cluster_ids: Iterable[int]) -> dict[int, list[int]]:
        """cluster id -> its face ids (ascending)."""
        out: dict[int, list[int]] = {}
        with self.session() as s:
            for part in _chunks(cluster_ids):
                rows = s.execute(select(ClusterFace.cluster_id, ClusterFace.face_id)
                                 .join(FaceRecord, FaceRecord.id == ClusterFace.face_id)
                                 .where(ClusterFace.cluster_id.in_(part)).order_by(ClusterFace.face_id))
                for cluster_id, face_id in rows:
                    out.setdefault(cluster_id, []).append(face_id)
        return out

    def pinned_clusters(self, cluster_ids: Iterable[int]) -> set[int]:
        """Those of the clusters holding at least one face a person placed."""
        found: set[int] = set()
        with self.session() as s:
            for part in _chunks(cluster_ids):
                found |= set(s.scalars(select(ClusterFace.cluster_id).distinct()
                                       .where(ClusterFace.cluster_id.in_(part), ClusterFace.pinned.is_(True))))
        return found

    # -- clusters -----------------------------------------------------------------------------------------

    def _row(self, cluster: Cluster, collection: str) -> ClusterRow:
        return ClusterRow(cluster.id, cluster.collection_id, collection, cluster.name, cluster.subject_id,
                          cluster.created_by, _iso(cluster.created_at), _iso(cluster.updated_at))

    def clusters(self, collection_id: int | None = None, ids: Iterable[int] | None = None) -> dict[int, ClusterRow]:
        query = select(Cluster, Collection.name).join(Collection, Collection.id == Cluster.collection_id)
        if collection_id is not None:
            query = query.where(Cluster.collection_id == collection_id)
        out: dict[int, ClusterRow] = {}
        with self.session() as s:
            if ids is None:
                for cluster, name in s.execute(query):
                    out[cluster.id] = self._row(cluster, name)
            else:
                for part in _chunks(ids):
                    for cluster, name in s.execute(query.where(Cluster.id.in_(part))):
                        out[cluster.id] = self._row(cluster, name)
        return out

    def cluster(self, cluster_id: int) -> ClusterRow:
        found = self.clusters(ids=[cluster_id])
        if cluster_id not in found:
            raise CatalogError(f"no cluster with id {cluster_id}")
        return found[cluster_id]

    def _new_cluster(self, s: Session, collection_id: int, created_by: str, name: str | None = None) -> int:
        row = Cluster(collection_id=collection_id, created_by=created_by, name=name)
        s.add(row)
        s.flush()
        return row.id

    @staticmethod
    def _place(s: Session, face_ids: list[int], cluster_id: int | None, pinned: bool, by: str) -> None:
        """Put faces in a cluster (or, with None, out of every cluster), replacing their placements."""
        now = utcnow()
        for part in _chunks(face_ids):
            s.execute(delete(ClusterFace).where(ClusterFace.face_id.in_(part)))
            s.execute(insert(ClusterFace), [{"face_id": f, "cluster_id": cluster_id, "pinned": pinned,
                                             "assigned_by": by, "assigned_at": now} for f in part])

    @staticmethod
    def _touch(s: Session, cluster_ids: Iterable[int]) -> None:
        ids = [int(i) for i in cluster_ids if i is not None]
        if ids:
            s.execute(update(Cluster).where(Cluster.id.in_(ids)).values(updated_at=utcnow()))

    @staticmethod
    def _prune(s: Session, collection_id: int) -> list[int]:
        """Delete the collection's clusters that no face is in any more; returns their ids."""
        used = select(ClusterFace.cluster_id).where(ClusterFace.cluster_id.is_not(None)).distinct()
        empty = list(s.scalars(select(Cluster.id).where(Cluster.collection_id == collection_id,
                                                         Cluster.id.not_in(used))))
        for part in _chunks(empty):
            s.execute(delete(Cluster).where(Cluster.id.in_(part)))
        return empty

    def create(self, collection_id: int, face_ids: list[int], by: str, *, pinned: bool = True,
               name: str | None = None) -> int:
        """A new cluster holding these faces (taken from wherever they were)."""
        with self.session() as s:
            cluster_id = self._new_cluster(s, collection_id, by, name)
            before = self._clusters_of(s, face_ids)
            self._place(s, face_ids, cluster_id, pinned, by)
            self._touch(s, before)
            self._prune(s, collection_id)
            s.commit()
            return cluster_id

    @staticmethod
    def _clusters_of(s: Session, face_ids: list[int]) -> set[int]:
        found: set[int] = set()
        for part in _chunks(face_ids):
            found |= set(s.scalars(select(ClusterFace.cluster_id).where(ClusterFace.face_id.in_(part),
                                                                      ClusterFace.cluster_id.is_not(None))))
        return found

    def place(self, collection_id: int, face_ids: list[int], cluster_id: int | None, by: str) -> list[int]:
        """A person's placement (pinned); returns the ids of clusters this emptied (deleted)."""
        with self.session() as s:
            before = self._clusters_of(s, face_ids)
            self._place(s, face_ids, cluster_id, True, by)
            self._touch(s, before | ({cluster_id} if cluster_id is not None else set()))
            gone = self._prune(s, collection_id)
            s.commit()
            return gone

    def merge(self, keep: int, others: list[int], by: str) -> int:
        """Move every face of ``others`` into ``keep`` (pinned: a person merged them); delete ``others``.

        ``keep`` takes the first name and subject link among the others when it has none. Returns
        how many faces moved."""
        with self.session() as s:
            kept = s.get(Cluster, keep)
            moved = 0
            for other_id in others:
                other = s.get(Cluster, other_id)
                if kept.name is None and other.name is not None:
                    kept.name = other.name
                if kept.subject_id is None and other.subject_id is not None:
                    kept.subject_id = other.subject_id
                result = s.execute(update(ClusterFace).where(ClusterFace.cluster_id == other_id)
                                   .values(cluster_id=keep, pinned=True, assigned_by=by, assigned_at=utcnow()))
                moved += result.rowcount or 0
                s.delete(other)
            kept.updated_at = utcnow()
            s.commit()
            return moved

    def set_name(self, cluster_id: int, name: str | None) -> None:
        with self.session() as s:
            row = s.get(Cluster, cluster_id)
            if row is None:
                raise CatalogError(f"no cluster with id {cluster_id}")
            row.name, row.updated_at = name, utcnow()
            s.commit()

    def link_subject(self, cluster_id: int, subject_id: int, name: str | None = None) -> None:
        with self.session() as s:
            row = s.get(Cluster, cluster_id)
            if row is None:
                raise CatalogError(f"no cluster with id {cluster_id}")
            row.subject_id, row.updated_at = subject_id, utcnow()
            if name:
                row.name = name
            s.commit()

    # -- runs -----------------------------------------------------------------------------------------------

    def state(self, collection_id: int) -> ClusterStateInfo | None:
        with self.session() as s:
            row = s.get(ClusterRunState, collection_id)
            if row is None:
                return None
            return ClusterStateInfo(row.collection_id, json.loads(row.params or "{}"), row.last_face_id,
                                    row.faces_processed, row.mode, row.ran_by, _iso(row.ran_at))

    def write_run(self, run: RunWrite) -> dict[int, int]:
        """Apply a run atomically (a crash leaves the previous clustering); returns {group index: cluster id}
        for the groups that got a new cluster."""
        created: dict[int, int] = {}
        with self.session() as s:
            if run.clear_unpinned:
                in_collection = select(FaceRecord.id).where(FaceRecord.collection_id == run.collection_id)
                s.execute(delete(ClusterFace).where(ClusterFace.pinned.is_(False),
                                                    ClusterFace.face_id.in_(in_collection)))
            for keep, gone in run.merges:
                s.execute(update(ClusterFace).where(ClusterFace.cluster_id == gone).values(cluster_id=keep))
                s.execute(delete(Cluster).where(Cluster.id == gone))
            touched = set()
            for i, (cluster_id, faces) in enumerate(run.groups):
                # a person may have placed some of these faces while the run was computing: theirs stands
                pinned_now: set[int] = set()
                for part in _chunks(faces):
                    pinned_now |= set(s.scalars(select(ClusterFace.face_id).where(ClusterFace.face_id.in_(part),
                                                                                ClusterFace.pinned.is_(True))))
                faces = [f for f in faces if f not in pinned_now]
                if not faces:
                    continue
                if cluster_id is None:
                    cluster_id = created[i] = self._new_cluster(s, run.collection_id, run.ran_by)
                touched.add(cluster_id)
                self._place(s, faces, cluster_id, False, run.ran_by)
            self._touch(s, touched | {keep for keep, _ in run.merges})
            self._prune(s, run.collection_id)
            row = s.get(ClusterRunState, run.collection_id)
            if row is None:
                row = ClusterRunState(collection_id=run.collection_id)
                s.add(row)
            row.params = json.dumps(run.params, sort_keys=True)
            row.last_face_id = run.last_face_id
            row.faces_processed = run.faces_processed
            row.mode, row.ran_by, row.ran_at = run.mode, run.ran_by, utcnow()
            s.commit()
        return created

    # -- answers to suggestions ------------------------------------------------------------------------

    def record_decision(self, collection_id: int, kind: str, *, cluster_b: int, cluster_a: int | None = None,
                        face_id: int | None = None, decision: str, score: float, by: str) -> None:
        with self.session() as s, s.begin():
            s.add(ClusterSuggestionDecision(collection_id=collection_id, kind=kind, face_id=face_id,
                                            cluster_a=cluster_a, cluster_b=cluster_b, decision=decision,
                                            score=float(score), decided_by=by))

    def rejected(self, collection_id: int) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
        """``(merges, attaches)`` a person rejected: {(cluster a, cluster b)} with a < b, {(face, cluster)}."""
        merges: set[tuple[int, int]] = set()
        attaches: set[tuple[int, int]] = set()
        with self.session() as s:
            rows = s.execute(select(ClusterSuggestionDecision.kind, ClusterSuggestionDecision.face_id,
                                    ClusterSuggestionDecision.cluster_a, ClusterSuggestionDecision.cluster_b)
                             .where(ClusterSuggestionDecision.collection_id == collection_id,
                                    ClusterSuggestionDecision.decision == "rejected"))
            for kind, face_id, a, b in rows:
                if kind == "merge" and a is not None:
                    merges.add((min(a, b), max(a, b)))
                elif kind == "attach" and face_id is not None:
                    attaches.add((face_id, b))
        return merges, attaches

    def counts(self, collection_id: int) -> tuple[int, int]:
        """(clusters with a face, faces in a cluster) of a collection."""
        with self.session() as s:
            row = s.execute(select(func.count(func.distinct(ClusterFace.cluster_id)), func.count(ClusterFace.face_id))
                            .join(FaceRecord, FaceRecord.id == ClusterFace.face_id)
                            .where(FaceRecord.collection_id == collection_id,
                                   ClusterFace.cluster_id.is_not(None))).one()
            return int(row[0]), int(row[1])
