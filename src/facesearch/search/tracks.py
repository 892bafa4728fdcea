"""One candidate per person-in-a-clip: a video's faces grouped by track.

A video is sampled at a few frames per second and its faces are linked into tracks (one person
on screen for a while). Without grouping, one track a few seconds long fills the result list
with near-identical frames and pushes other people out of ``top_k``. So a search keeps, per
(video, track), only its best-scoring face; the others stay reachable: the candidate carries
the ids of every face of the track (in time order) and how many of them scored among the hits.
Photos (and video faces without a track) are their own group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from facesearch.search.results import Candidate


@dataclass(frozen=True)
class TrackGroup:
    """The best hit of one group and what was folded into it."""

    score: float
    face_id: int
    hits: int  # faces of this group among the hits (1 for a photo face)


def group_key(image_id: int, track_id: int | None, face_id: int) -> tuple:
    """Faces of one video track share a key; any other face is its own group."""
    return ("track", image_id, track_id) if track_id is not None else ("face", face_id)


def best_per_group(hits: Iterable[tuple[float, int]], key_of: Callable[[int], tuple | None],
                   limit: int) -> list[TrackGroup]:
    """The best hit of each group, best first, at most ``limit`` groups.

    ``hits`` are (score, face id); ``key_of`` gives a face's group key, or None to drop the hit (a
    vector without a catalog row). Ties keep the lower face id, so results are reproducible."""
    best: dict[tuple, list] = {}
    for score, face_id in sorted(hits, key=lambda h: (-h[0], h[1])):
        key = key_of(face_id)
        if key is None:
            continue
        if key in best:
            best[key][2] += 1
        elif len(best) < limit:
            best[key] = [score, face_id, 1]
    return [TrackGroup(score, face_id, hits) for score, face_id, hits in best.values()]


def one_per_track(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Candidates merged from several searches (a subject's faces): the first, best, of each track."""
    seen: set[tuple] = set()
    out = []
    for c in candidates:
        key = group_key(c.image_id, c.track_id, c.face_id)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out
