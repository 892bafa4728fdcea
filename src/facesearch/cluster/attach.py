"""Stage 2 of clustering: attach unassigned faces to the tight cores that stage 1 formed.

Stage 1 (:mod:`facesearch.cluster.core`) only joins two groups whose *average* cosine passes a
strict threshold, so a person's photos that are far apart (years, make-up, profile) often stay
out: each is too unlike the core's average. Stage 2 asks a different, local question, using
evidence the k-NN graph already holds: do at least ``support`` of this face's k nearest
neighbours belong to **one** core, each at or above the cosine of a calibrated per-pair
false-match rate, while no other core has that support?

- Evidence is counted against core members only; attached faces are satellites (they never vote
  for others and never enter a core's sums), so the outcome is a function of the cores and
  the k-NN lists alone: batch and incremental runs that agree on those agree here, whatever
  the order faces arrived in.
- A second, *wide* rule (issue 17) takes more supporters at a looser per-comparison rate:
  ``wide_support`` (4) neighbours in one core at or above a cosine that depends on the core's
  size (:meth:`facesearch.cluster.params.ClusterParams.wide_thresholds`: FMR 3e-5 for a core of
  up to k members, halved per doubling beyond, since a big core always holds a few members like
  any face). A face qualifies for a core by either rule; the rest below holds for both.
- Quality-aware, not quality-excluding: a face below ``min_quality`` may attach too, but needs
  one supporting neighbour more.
- Cannot-link: a face never joins a cluster that already holds a face of the same image (photo
  or video frame), and of two faces of one image attaching to one cluster only the better
  supported one does.
- Ambiguous faces (support for two clusters) stay unassigned: they are what the human
  suggestions (:func:`neighbour_votes`, :mod:`facesearch.cluster.suggest`) are for.

This module is the only home of the attach rule: :class:`facesearch.cluster.core.ClusterState`
(batch and incremental arrays) and :mod:`facesearch.services.clusters` (the catalog-backed service) both
call :func:`attach_faces`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Votes:
    """Per (face, cluster) evidence from the face's k-NN list: one row per pair with any vote."""

    faces: np.ndarray  # (m,) row of the face in the arrays given
    labels: np.ndarray  # (m,) cluster label voted for
    support: np.ndarray  # (m,) neighbours in that cluster at or above the threshold
    best: np.ndarray  # (m,) best cosine to that cluster's members among the neighbours


def neighbour_votes(faces: np.ndarray, core_labels: np.ndarray, nbr_ids: np.ndarray, nbr_sims: np.ndarray,
                    threshold: float | np.ndarray) -> Votes:
    """For each face in ``faces``: which clusters its neighbours (at cosine >= ``threshold``) are core members of.

    ``nbr_ids`` / ``nbr_sims`` are the k-NN rows *of the faces given* (row r belongs to ``faces[r]``;
    ids index ``core_labels``; -1 = no neighbour). ``threshold``: one cosine, or one per cluster label.
    """
    faces = np.asarray(faces, np.int64)
    ids = np.asarray(nbr_ids, np.int64)
    sims = np.asarray(nbr_sims, np.float32)
    per_label = np.ndim(threshold) > 0
    rows, cols = np.nonzero((ids >= 0) & (sims >= (np.min(threshold) if per_label else threshold)))
    nl = core_labels[ids[rows, cols]] if len(rows) else np.zeros(0, np.int64)
    keep = nl >= 0
    if per_label and len(rows):
        keep[keep] = sims[rows[keep], cols[keep]] >= np.asarray(threshold)[nl[keep]]
    rows, nl, s = rows[keep], nl[keep], sims[rows[keep], cols[keep]]
    if not len(rows):
        empty = np.zeros(0, np.int64)
        return Votes(empty, empty, empty, np.zeros(0, np.float32))
    span = int(nl.max()) + 1
    key = rows.astype(np.int64) * span + nl
    order = np.lexsort((-s, key))
    key, s = key[order], s[order]
    uniq, first, count = np.unique(key, return_index=True, return_counts=True)
    return Votes(faces[uniq // span], uniq % span, count.astype(np.int64), s[first])


def _qualified(votes: Votes, support: int, good: np.ndarray | None) -> Votes:
    """The (face, cluster) rows with at least ``support`` supporters (a poor face: one more)."""
    need = np.full(len(votes.faces), support, np.int64)
    if good is not None:
        need += ~np.asarray(good, bool)[votes.faces]  # a poor face needs one supporter more
    enough = votes.support >= need
    return Votes(votes.faces[enough], votes.labels[enough], votes.support[enough], votes.best[enough])


def attach_faces(core_labels: np.ndarray, faces: np.ndarray, nbr_ids: np.ndarray, nbr_sims: np.ndarray, *,
                 threshold: float, support: int, good: np.ndarray | None = None,
                 image_ids: np.ndarray | None = None, wide_support: int = 0,
                 wide_thresholds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(attached faces, their labels)``: which of ``faces`` (unassigned in ``core_labels``) join which core.

    ``good`` / ``image_ids`` are indexed like ``core_labels`` (image -1 = unknown, never clashes).
    ``wide_support`` / ``wide_thresholds`` (one cosine per cluster label): the wide rule, off when 0.
    """
    empty = np.zeros(0, np.int64)
    faces = np.asarray(faces, np.int64)
    if support <= 0 or not len(faces):
        return empty, empty
    votes = _qualified(neighbour_votes(faces, core_labels, nbr_ids, nbr_sims, threshold), support, good)
    if wide_support > 0 and wide_thresholds is not None and len(wide_thresholds):
        wide = _qualified(neighbour_votes(faces, core_labels, nbr_ids, nbr_sims, wide_thresholds), wide_support, good)
        # a (face, cluster) row qualifying by both rules counts once, with the first rule's evidence
        span = int(max(core_labels.max(initial=0), 0)) + 1
        new = ~np.isin(wide.faces * span + wide.labels, votes.faces * span + votes.labels)
        votes = Votes(*(np.concatenate([a, b[new]]) for a, b in zip(
            (votes.faces, votes.labels, votes.support, votes.best),
            (wide.faces, wide.labels, wide.support, wide.best))))
    if not len(votes.faces):
        return empty, empty
    f, lab, sup, best = votes.faces, votes.labels, votes.support, votes.best
    # exactly one cluster with enough support, or none: an ambiguous face is left to a person
    uniq, counts = np.unique(f, return_counts=True)
    single = np.isin(f, uniq[counts == 1])
    f, lab, sup, best = f[single], lab[single], sup[single], best[single]
    if image_ids is not None and len(f):
        images = np.asarray(image_ids, np.int64)
        core = np.flatnonzero((core_labels >= 0) & (images >= 0))
        span = int(max(images.max(), 0)) + 1
        taken = core_labels[core] * span + images[core]
        img = images[f]
        clash = (img >= 0) & np.isin(lab * span + img, taken)
        f, lab, sup, best, img = f[~clash], lab[~clash], sup[~clash], best[~clash], img[~clash]
        # two faces of one image attaching to one cluster: only the better supported one
        known = img >= 0
        if known.any():
            order = np.lexsort((f, -best, -sup, lab * span + np.where(known, img, 0)))
            pair = (lab * span + img)[order]
            dup = np.r_[False, pair[1:] == pair[:-1]] & known[order]
            drop = np.zeros(len(f), bool)
            drop[order[dup]] = True
            f, lab = f[~drop], lab[~drop]
    order = np.argsort(f, kind="stable")
    return f[order], lab[order]
