"""The union-find of one incremental run of the cluster service: the existing clusters and the
single faces the run touches, linked by the one copy of the rules (:class:`facesearch.cluster.core.Linker`)."""

from __future__ import annotations

import numpy as np

from facesearch.catalog.clusters import FaceRows
from facesearch.cluster import ClusterParams
from facesearch.cluster.attach import attach_faces
from facesearch.cluster.linker import Linker
from facesearch.index.base import Hits


class Groups(Linker):
    """Union-find over the groups one incremental run touches: existing clusters and single faces.

    The linking rules themselves are :class:`facesearch.cluster.core.Linker`'s (one home for
    batch, incremental and this service); this class only says where a face's group is."""

    def __init__(self, params: ClusterParams, vector: dict[int, np.ndarray], good: dict[int, bool],
                 image: dict[int, int]) -> None:
        self.params = params
        self.stats = {"edges": 0, "merges": 0, "leaf_joins": 0, "refused_link": 0, "blocked_poor": 0,
                      "refused_locked": 0, "cannot_link": 0, "attached": 0}
        self.vector, self.good, self.image = vector, good, image
        self.node: dict[int, int] = {}  # face id -> its node
        self.parent: list[int] = []
        self.size: list[int] = []
        self.ngood: list[int] = []
        self.sums: list[np.ndarray | None] = []  # sum of good members' embeddings (float64)
        self.images: list[set[int]] = []  # image ids of the members (cannot-link)
        self.clusters: list[set[int]] = []  # existing clusters in the group (at roots)
        self.locked: list[bool] = []  # holds a cluster a person named, linked or edited: never auto-merged
        self.faces: list[list[int]] = []  # faces not yet in a cluster (new or unassigned), at roots

    def add(self, faces: list[int], cluster: int | None = None, locked: bool = False) -> int:
        """A node for an existing cluster's faces (``cluster`` given) or for one face not in a cluster."""
        node = len(self.parent)
        good = [f for f in faces if self.good[f]]
        self.parent.append(node)
        self.size.append(len(faces))
        self.ngood.append(len(good))
        self.sums.append(np.sum([self.vector[f] for f in good], axis=0, dtype=np.float64) if good else None)
        self.images.append({self.image[f] for f in faces})
        self.clusters.append({cluster} if cluster is not None else set())
        self.locked.append(locked)
        self.faces.append([] if cluster is not None else list(faces))
        for f in faces:
            self.node[f] = node
        return node

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    # -- what the linking rules read (Linker) -----------------------------------------------------------

    def _node(self, face: int) -> int:
        return self.node[face]

    def _find(self, node: int) -> int:
        return self.find(node)

    def _face_good(self, face: int) -> bool:
        return self.good[face]

    def _face_vector(self, face: int) -> np.ndarray:
        return self.vector[face]

    def _alone(self, face: int) -> bool:
        node = self.node[face]
        return self.size[node] == 1 and self.parent[node] == node

    def _sum(self, root: int) -> np.ndarray | None:
        return self.sums[root]

    def _good_count(self, root: int) -> int:
        return self.ngood[root]

    def _images_of(self, root: int) -> set[int]:
        return self.images[root]

    def _locked(self, ra: int, rb: int) -> bool:
        return bool(self.clusters[ra] and self.clusters[rb] and (self.locked[ra] or self.locked[rb]))

    def _union(self, a: int, b: int, absorbed: list[tuple[int, int]] | None = None) -> None:
        if (self.size[a], -a) < (self.size[b], -b):
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]
        self.ngood[a] += self.ngood[b]
        sa, sb = self.sums[a], self.sums[b]
        self.sums[a] = sb.copy() if sa is None and sb is not None else (sa if sb is None else sa + sb)
        self.sums[b] = None
        self.images[a] |= self.images[b]
        self.images[b] = set()
        self.clusters[a] |= self.clusters[b]
        self.locked[a] = self.locked[a] or self.locked[b]
        self.faces[a].extend(self.faces[b])
        self.faces[b] = []

    def attach_left_out(self, fresh: FaceRows, hits: Hits) -> None:
        """Stage 2 for the new faces left out of every group: :func:`facesearch.cluster.attach.attach_faces`
        against the clusters their neighbours are in after stage 1 (existing ids, or groups just formed)."""
        if not self.params.attach_support:
            return
        rows = [r for r, f in enumerate(fresh.ids.tolist())
                if not self.clusters[self.find(self.node[f])]
                and self.size[self.find(self.node[f])] < self.params.min_size]
        if not rows:
            return
        root_label: dict[int, int] = {}  # a group that is (or becomes) a cluster -> a local label
        for node in self.node.values():
            root = self.find(node)
            if self.clusters[root] or self.size[root] >= self.params.min_size:
                root_label.setdefault(root, len(root_label))
        local: dict[int, int] = {}  # face id -> local index
        core: list[int] = []

        def index_of(face: int) -> int:
            if face not in local:
                local[face] = len(core)
                node = self.node.get(face)
                core.append(root_label.get(self.find(node), -1) if node is not None else -1)
            return local[face]
        faces = np.array([index_of(int(fresh.ids[r])) for r in rows], np.int64)
        nbr_ids = np.full((len(rows), self.params.k), -1, np.int64)
        nbr_sims = np.full((len(rows), self.params.k), -np.inf, np.float32)
        for out, r in enumerate(rows):
            face_id, kept = int(fresh.ids[r]), 0
            for other, score in zip(hits.ids[r].tolist(), hits.scores[r].tolist()):
                if other < 0 or other == face_id or other not in self.node:
                    continue
                if kept == self.params.k:
                    break
                nbr_ids[out, kept], nbr_sims[out, kept] = index_of(other), score
                kept += 1
        ids = np.array(list(local), np.int64)
        wide = None
        # the wide rule's cosine by each cluster's size; a stored cluster counts the faces attached to it
        # too (the batch run counts core members), so it is at most one halving stricter here
        if self.params.attach_wide_support and root_label:
            wide = self.params.wide_thresholds(np.array([self.size[r] for r in root_label], np.int64))
        attached, labels = attach_faces(
            np.array(core, np.int64), faces, nbr_ids, nbr_sims, threshold=self.params.attach_threshold,
            support=self.params.attach_support, good=np.array([self.good[f] for f in ids.tolist()], bool),
            image_ids=np.array([self.image[f] for f in ids.tolist()], np.int64),
            wide_support=self.params.attach_wide_support, wide_thresholds=wide)
        target = {label: root for root, label in root_label.items()}
        for position, label in zip(attached.tolist(), labels.tolist()):
            root, face = self.find(target[label]), int(ids[position])
            if self.image[face] in self.images[root]:
                self.stats["cannot_link"] += 1  # a member outside the face's neighbours is of its image
                continue
            self._union(root, self.find(self.node[face]))
            self.stats["attached"] += 1
