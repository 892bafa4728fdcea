"""The stage-1 linking rules, in one place: :class:`Linker`.

:class:`facesearch.cluster.core.ClusterState` (batch and incremental arrays) and the catalog
service (:mod:`facesearch.services.cluster_groups`) subclass it and only say where a face's group
is; the rules (average link, the one-comparison rule, poor faces as leaves, cannot-link,
person-made locks) are here and nowhere else. :mod:`facesearch.cluster.core`'s docstring
explains each.
"""

from __future__ import annotations

from collections.abc import Set

import numpy as np

from facesearch.cluster.params import ClusterParams


class Linker:
    """The stage-1 linking rules (module docstring, points 2 and 3, and cannot-link), in one place.

    Subclasses hold the union-find: :class:`ClusterState` over the positions of an array of
    faces, :class:`facesearch.services.clusters` over the clusters and faces one catalog run touches.
    ``_consider`` takes two *faces* (whatever the subclass keys them by) and a candidate edge.
    """

    params: ClusterParams
    stats: dict[str, int]

    # -- what a subclass provides --------------------------------------------------------------

    def _node(self, face: int) -> int:
        return face

    def _find(self, node: int) -> int:
        raise NotImplementedError

    def _face_good(self, face: int) -> bool:
        raise NotImplementedError

    def _face_vector(self, face: int) -> np.ndarray:
        raise NotImplementedError

    def _alone(self, face: int) -> bool:
        """The face is a group by itself (a poor face joins once, then never moves groups)."""
        raise NotImplementedError

    def _sum(self, root: int) -> np.ndarray | None:
        raise NotImplementedError

    def _good_count(self, root: int) -> int:
        raise NotImplementedError

    def _images_of(self, root: int) -> Set[int]:
        """Image ids of the group's faces (empty when unknown)."""
        return frozenset()

    def _locked(self, ra: int, rb: int) -> bool:
        """Two groups a person's edits keep apart (only the catalog service has such groups)."""
        return False

    def _union(self, ra: int, rb: int, absorbed: list[tuple[int, int]]) -> None:
        raise NotImplementedError

    # -- the rules -----------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _clash(self, ra: int, rb: int) -> bool:
        a, b = self._images_of(ra), self._images_of(rb)
        if not a or not b:
            return False
        small, large = (a, b) if len(a) <= len(b) else (b, a)
        return any(image in large for image in small)

    def _link(self, comparisons: int) -> float:
        """The cosine the average of ``comparisons`` face pairs must reach for two groups to join.

        A group founded on one comparison (two single faces) rests on one cosine, the least evidence
        a cluster can have: it needs a stricter calibrated rate than the link's (``pair_fmr``, 6e-6;
        :attr:`ClusterParams.one_comparison_threshold`). An average over 2+ pairs is harder for two
        different people to reach at the same cosine, and keeps the link's rate."""
        if comparisons == 1:
            return self.params.one_comparison_threshold
        return float(self.params.link_threshold)

    def _consider(self, i: int, j: int, s: float, absorbed: list[tuple[int, int]]) -> None:
        ri, rj = self._find(self._node(i)), self._find(self._node(j))
        if ri == rj:
            return
        gi, gj = self._face_good(i), self._face_good(j)
        if not gi and not gj:
            self._count("blocked_poor")
            return
        if self._clash(ri, rj):
            self._count("cannot_link")  # faces of one photo or frame are never one person
            return
        if not (gi and gj):
            leaf, group = (i, rj) if not gi else (j, ri)
            if not self._alone(leaf):
                self._count("blocked_poor")  # a poor face joins once and never bridges
                return
            ngood = self._good_count(group)
            if ngood == 0 or float(self._face_vector(leaf) @ self._sum(group)) / ngood < self._link(ngood):
                self._count("refused_link")
                return
            self._union(group, self._find(self._node(leaf)), absorbed)
            self._count("leaf_joins")
            return
        if self._locked(ri, rj):
            self._count("refused_locked")  # a person's clusters are merged by a person only
            return
        comparisons = self._good_count(ri) * self._good_count(rj)
        if float(self._sum(ri) @ self._sum(rj)) / float(comparisons) < self._link(comparisons):
            self._count("refused_link")
            return
        self._union(ri, rj, absorbed)
        self._count("merges")
