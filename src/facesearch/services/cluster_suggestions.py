"""Suggestions for a person: recall that the clustering will not risk alone, one click away.

Two kinds, each with its calibrated evidence in numbers and in words:

- **merge** -- "clusters A and B may be one person": some of their faces are k-nearest
  neighbours of each other at or above the suggestion threshold (:data:`SUGGEST_FMR` per pair,
  looser than any automatic decision), yet the two did not join automatically (their *average*
  cosine stays below the link threshold, or a person's edits lock them). Ranked by that
  average cosine; the evidence gives it, the best cross pair, how many cross neighbours, and
  what each score means: how often two *different* people score that high (the pack's
  calibration), and how many such look-alikes a face meets in a collection of this size.
- **attach** -- "this unassigned face may belong to cluster N": a face in no cluster (and not
  kept out by a person) whose nearest neighbours include members of a cluster at or above
  the suggestion threshold, without the evidence stage 2 needs (:mod:`facesearch.cluster.attach`),
  or with support for two clusters.

Never suggested: faces or clusters hidden by an opt-out, a face into a cluster that already
holds a face of the same image (cannot-link), and whatever a person rejected before (kept in
``cluster_suggestion_decisions``). Accepting is a person's edit (pinned, like any merge or
move); who may do it and the audit record are :mod:`facesearch.governance.clusters`' business.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from facesearch.cluster.attach import neighbour_votes
from facesearch.cluster.core import threshold_for_fmr
from facesearch.services.clusters import ClusterError, Clusters, EditResult, Hide, MergeResult

#: members of each cluster whose neighbours are searched for merge evidence (the best by quality)
MERGE_PROBES = 20
#: per-pair false-match rate from which a neighbour counts as evidence for a person to judge: the
#: edge floor of the clustering (cos 0.280 for buffalo_s), well below the automatic decisions
SUGGEST_FMR = 1e-4


@dataclass(frozen=True)
class Evidence:
    """A cosine and what it means under the pack's calibration."""

    score: float
    fmr: float  # share of different-person pairs scoring this high or higher
    look_alikes: float  # expected different-person faces this high among the collection's faces
    words: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MergeSuggestion:
    cluster_a: int
    cluster_b: int
    size_a: int
    size_b: int
    average: Evidence  # mean cosine over every pair of their faces
    best: Evidence  # the strongest pair of their faces
    cross_neighbours: int  # neighbour pairs at or above the attach threshold
    kind: str = "merge"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AttachSuggestion:
    face_id: int
    cluster_id: int
    cluster_size: int
    best: Evidence  # the face's strongest match among the cluster's faces
    support: int  # its nearest neighbours in that cluster at or above the attach threshold
    other_clusters: list[int] = field(default_factory=list)  # also supported: the face is ambiguous
    kind: str = "attach"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SuggestionList:
    collection: str
    faces: int
    threshold: float  # the cosine evidence must reach (SUGGEST_FMR per pair)
    threshold_fmr: float
    merges: list[MergeSuggestion]
    attaches: list[AttachSuggestion]

    def to_dict(self) -> dict:
        return {"collection": self.collection, "faces": self.faces, "threshold": self.threshold,
                "threshold_fmr": self.threshold_fmr, "merges": [m.to_dict() for m in self.merges],
                "attaches": [a.to_dict() for a in self.attaches]}


class ClusterSuggestions:
    def __init__(self, clusters: Clusters) -> None:
        self.clusters = clusters
        self.engine = clusters.engine
        self.store = clusters.store

    def evidence(self, score: float, faces: int) -> Evidence:
        """``score`` in the calibration's words (``faces``: the collection's size, for the look-alike count)."""
        calibration = self.engine.calibration
        if calibration is None:
            return Evidence(score, float("nan"), float("nan"), f"cosine {score:.3f} (no calibration)")
        fmr, beyond = calibration.false_match_rate(score)
        look_alikes = fmr * max(faces - 1, 0)
        rate = f"1 in {1 / fmr:,.0f}" if fmr > 0 else "never"
        words = (f"cosine {score:.3f}: two different people score this high in about {rate} comparisons"
                 f"{' (beyond the measured range: extrapolated)' if beyond else ''}; in these {faces:,} faces "
                 f"a face meets about {look_alikes:.2g} such look-alike(s)")
        return Evidence(round(float(score), 4), fmr, look_alikes, words)

    def suggest(self, collection: str, *, hide: Hide | None = None, limit: int = 50) -> SuggestionList:
        """The strongest merge and attach suggestions of the collection (each list at most ``limit``)."""
        info = self.engine.collection(collection)
        params = self.clusters.params()
        calibration = self.engine.calibration
        threshold = (threshold_for_fmr(SUGGEST_FMR, calibration) if calibration is not None
                     else float(params.edge_threshold))
        rows = self.store.face_rows(info.id)
        out = SuggestionList(info.name, len(rows), threshold, SUGGEST_FMR, [], [])
        if not len(rows):
            return out
        visible = ~self.clusters._hidden(rows, hide)
        members = self.store.members(info.id)
        placed = dict(zip(members.face_ids.tolist(), members.cluster_ids.tolist()))
        position = {f: i for i, f in enumerate(rows.ids.tolist())}
        label = np.array([placed.get(f, -1) for f in rows.ids.tolist()], np.int64)
        label[~visible] = -1
        free = np.array([f not in placed for f in rows.ids.tolist()], bool) & visible  # not kept out by a person
        sizes = dict(zip(*np.unique(label[label >= 0], return_counts=True)))
        rejected_merges, rejected_attaches = self.store.rejected(info.id)

        # faces searched: the unassigned ones, and up to MERGE_PROBES of each cluster's best faces
        probes = list(np.flatnonzero(free))
        for cluster_id in sizes:
            idx = np.flatnonzero(label == cluster_id)
            probes += idx[np.argsort(-rows.quality[idx], kind="stable")[:MERGE_PROBES]].tolist()
        probes_arr = np.array(sorted(set(probes)), np.int64)
        if not len(probes_arr):
            return out
        index = self.engine.index_of(info)
        with self.engine.mutex:
            hits = index.search(rows.embeddings[probes_arr], params.k + 1)
        nbr = np.full(hits.ids.shape, -1, np.int64)
        for r in range(hits.ids.shape[0]):
            for c, other in enumerate(hits.ids[r].tolist()):
                p = position.get(other, -1)
                if p >= 0 and p != probes_arr[r] and visible[p]:
                    nbr[r, c] = p
        sims = np.where(nbr >= 0, hits.scores, -np.inf).astype(np.float32)
        out.attaches = self._attaches(rows, label, free, probes_arr, nbr, sims, threshold, params, sizes,
                                      rejected_attaches, limit)
        out.merges = self._merges(rows, label, probes_arr, nbr, sims, threshold, params, sizes, rejected_merges,
                                  limit)
        return out

    def _attaches(self, rows, label, free, probes, nbr, sims, threshold, params, sizes, rejected, limit):
        is_free = free[probes]
        votes = neighbour_votes(probes[is_free], label, nbr[is_free], sims[is_free], threshold)
        images_of: dict[int, set[int]] = {}
        for i in np.flatnonzero(label >= 0).tolist():
            images_of.setdefault(int(label[i]), set()).add(int(rows.image_ids[i]))
        by_face: dict[int, list[tuple[int, int, float]]] = {}
        for f, lab, sup, best in zip(votes.faces.tolist(), votes.labels.tolist(), votes.support.tolist(),
                                     votes.best.tolist()):
            face_id = int(rows.ids[f])
            if (face_id, lab) in rejected or int(rows.image_ids[f]) in images_of.get(lab, ()):
                continue
            by_face.setdefault(f, []).append((sup, lab, best))
        found = []
        for f, options in by_face.items():
            options.sort(key=lambda o: (-o[0], -o[2], o[1]))
            sup, lab, best = options[0]
            found.append(AttachSuggestion(int(rows.ids[f]), lab, int(sizes.get(lab, 0)),
                                          self.evidence(best, len(rows)), sup, [o[1] for o in options[1:]]))
        found.sort(key=lambda a: (-a.best.score, a.face_id))
        return found[:limit]

    def _merges(self, rows, label, probes, nbr, sims, threshold, params, sizes, rejected, limit):
        pairs: dict[tuple[int, int], list] = {}
        own = label[probes]
        for r in np.flatnonzero(own >= 0).tolist():
            a = int(own[r])
            for p, s in zip(nbr[r].tolist(), sims[r].tolist()):
                b = int(label[p]) if p >= 0 else -1
                if b < 0 or b == a or s < threshold:
                    continue
                key = (min(a, b), max(a, b))
                entry = pairs.setdefault(key, [0, -np.inf])
                entry[0] += 1
                entry[1] = max(entry[1], s)
        sums = {}
        for cluster_id in {c for pair in pairs for c in pair}:
            sums[cluster_id] = rows.embeddings[label == cluster_id].sum(0, dtype=np.float64)
        found = []
        for (a, b), (count, best) in pairs.items():
            if (a, b) in rejected:
                continue
            ia, ib = set(rows.image_ids[label == a].tolist()), set(rows.image_ids[label == b].tolist())
            if ia & ib:
                continue  # faces of one image: never one person
            average = float(sums[a] @ sums[b]) / float(sizes[a] * sizes[b])
            found.append(MergeSuggestion(a, b, int(sizes[a]), int(sizes[b]), self.evidence(average, len(rows)),
                                         self.evidence(best, len(rows)), count))
        found.sort(key=lambda m: (-m.average.score, m.cluster_a, m.cluster_b))
        return found[:limit]

    # -- answers ------------------------------------------------------------------------------------------

    def merge_score(self, cluster_a: int, cluster_b: int) -> float:
        """Mean cosine over every pair of the two clusters' faces (recomputed here, never taken from a client)."""
        faces = self.store.cluster_faces([cluster_a, cluster_b])
        row = self.store.cluster(cluster_a)
        a = self.store.face_rows(row.collection_id, ids=faces.get(cluster_a, [])).embeddings
        b = self.store.face_rows(row.collection_id, ids=faces.get(cluster_b, [])).embeddings
        if not len(a) or not len(b):
            return 0.0
        return float(a.sum(0, dtype=np.float64) @ b.sum(0, dtype=np.float64)) / float(len(a) * len(b))

    def attach_score(self, face_id: int, cluster_id: int) -> float:
        """The face's best cosine to the cluster's faces."""
        row = self.store.cluster(cluster_id)
        faces = self.store.cluster_faces([cluster_id]).get(cluster_id, [])
        members = self.store.face_rows(row.collection_id, ids=faces).embeddings
        face = self.store.face_rows(row.collection_id, ids=[face_id]).embeddings
        if not len(members) or not len(face):
            return 0.0
        return float((members @ face[0]).max())

    def _pair(self, cluster_a: int, cluster_b: int) -> tuple[int, int, int]:
        if cluster_a == cluster_b:
            raise ClusterError("a merge suggestion names two different clusters")
        a, b = min(cluster_a, cluster_b), max(cluster_a, cluster_b)
        collection_id = self.store.cluster(a).collection_id
        if self.store.cluster(b).collection_id != collection_id:
            raise ClusterError("clusters of different collections are never suggested together")
        return collection_id, a, b

    def accept_merge(self, cluster_a: int, cluster_b: int, *, by: str = "") -> tuple[MergeResult, float]:
        collection_id, a, b = self._pair(cluster_a, cluster_b)
        score = self.merge_score(a, b)
        result = self.clusters.merge([a, b], by=by)
        self.store.record_decision(collection_id, "merge", cluster_a=None, cluster_b=result.cluster_id,
                                   decision="accepted", score=score, by=by)
        return result, score

    def reject_merge(self, cluster_a: int, cluster_b: int, *, by: str = "") -> float:
        collection_id, a, b = self._pair(cluster_a, cluster_b)
        score = self.merge_score(a, b)
        self.store.record_decision(collection_id, "merge", cluster_a=a, cluster_b=b, decision="rejected",
                                   score=score, by=by)
        return score

    def accept_attach(self, face_id: int, cluster_id: int, *, by: str = "") -> tuple[EditResult, float]:
        collection_id = self.store.cluster(cluster_id).collection_id
        self.clusters._same_collection(collection_id, [face_id])
        score = self.attach_score(face_id, cluster_id)
        result = self.clusters.move([face_id], cluster_id, by=by)
        self.store.record_decision(collection_id, "attach", face_id=face_id, cluster_b=cluster_id,
                                   decision="accepted", score=score, by=by)
        return result, score

    def reject_attach(self, face_id: int, cluster_id: int, *, by: str = "") -> float:
        collection_id = self.store.cluster(cluster_id).collection_id
        self.clusters._same_collection(collection_id, [face_id])  # a face of that collection, or an error
        score = self.attach_score(face_id, cluster_id)
        self.store.record_decision(collection_id, "attach", face_id=face_id, cluster_b=cluster_id,
                                   decision="rejected", score=score, by=by)
        return score


__all__ = ["AttachSuggestion", "ClusterSuggestions", "Evidence", "MergeSuggestion", "SuggestionList"]
