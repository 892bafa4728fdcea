"""Scoring people, not photos: fusing the several enrolled faces of a subject into one score.

A subject (a named or numbered person) has one or more enrolled face embeddings. Two
fusion rules turn "probe vs each of the subject's faces" into one score per subject:

- ``mean`` (mean template): the normalised mean of the subject's embeddings is compared
  once. Averaging cancels what differs between the photos (pose, light, expression) and
  keeps what they share, so same-person scores rise (on LFW from 0.60 to 0.70 on average
  with 3 photos).
- ``best`` (best-of): the highest similarity over the subject's faces. One good photo is
  enough, but every extra photo is another chance for a stranger to score high.

Which is the default was decided by measurement (``bench/subjects_lfw.py``, recorded in
docs/accuracy.md ("Subjects")): on LFW the mean template gave the higher rank-1 *and* the lower
FNIR at FPIR 0.01, so :data:`DEFAULT_FUSION` is ``"mean"``; ``"best"`` stays selectable.

What a fused score means: the calibration measures single face-to-face comparisons, and
**every enrolled face counts as one comparison, whichever the fusion**: the threshold (set
for the gallery size searched) and the false-match estimates of a subject with k faces are
those of k comparisons. For ``best`` that is exact (a max over k chances). For ``mean`` it is
measured: on LFW, different-person scores against 3-photo mean templates exceed 0.25 and
0.30 about 1.6x and 3.1x as often as against single photos (the template keeps what is
stable about a face, including what look-alikes share), i.e. about as often as 3 single
comparisons would; further out (>= 0.35) more often still, and most of that far tail is close
relatives (George W. vs Jeb Bush, Serena vs Venus
Williams), whose resemblance a template reinforces. See docs/accuracy.md ("Subjects").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from facesearch.search.results import FalseMatchEstimate, ProbeFace, Verdict

FUSIONS = ("mean", "best")
#: Chosen by bench/subjects_lfw.py (see the module docstring).
DEFAULT_FUSION = "mean"


def check_fusion(fusion: str | None) -> str:
    fusion = fusion or DEFAULT_FUSION
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
    return fusion


def mean_template(vectors: np.ndarray) -> np.ndarray:
    """The unit-length mean of unit-length embeddings (float32)."""
    vectors = np.atleast_2d(np.asarray(vectors, np.float32))
    mean = vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


@dataclass
class SubjectSet:
    """The enrolled faces of some subjects, grouped: ``faces[starts[s]:starts[s] + counts[s]]`` are
    subject ``ids[s]``'s. Subjects without a face are not part of a set."""

    ids: np.ndarray  # (S,) subject ids
    faces: np.ndarray  # (F, d) float32, grouped by subject in ``ids`` order
    counts: np.ndarray  # (S,) faces per subject, all >= 1
    templates: np.ndarray  # (S, d) mean templates
    face_ids: np.ndarray | None = None  # (F,) ids of the faces' rows, when the caller keeps them

    @classmethod
    def build(cls, groups: list[tuple[int, np.ndarray]], dim: int = 512,
              face_ids: np.ndarray | None = None) -> SubjectSet:
        groups = [(int(sid), np.atleast_2d(np.asarray(v, np.float32))) for sid, v in groups if len(v)]
        if not groups:
            empty = np.zeros((0, dim), np.float32)
            return cls(np.zeros(0, np.int64), empty, np.zeros(0, np.int64), empty.copy())
        return cls(np.array([sid for sid, _ in groups], np.int64), np.concatenate([v for _, v in groups]),
                   np.array([len(v) for _, v in groups], np.int64), np.stack([mean_template(v) for _, v in groups]),
                   None if face_ids is None else np.asarray(face_ids, np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def best_faces(self, probe: np.ndarray) -> np.ndarray:
        """(S,) row of each subject's face closest to one probe embedding."""
        if not len(self):
            return np.zeros(0, np.int64)
        sims = self.faces @ np.asarray(probe, np.float32)
        ends = self.starts + self.counts
        return np.array([start + int(np.argmax(sims[start:end])) for start, end in zip(self.starts, ends)], np.int64)

    def comparisons(self, fusion: str | None = None) -> int:
        """How many face comparisons one probe's search of this set counts as: every enrolled face,
        for either fusion (see the module docstring for why a mean template is not one)."""
        check_fusion(fusion)
        return int(self.counts.sum())

    def scores(self, probes: np.ndarray, fusion: str | None = None) -> np.ndarray:
        """(P, S) fused similarity of each probe embedding to each subject."""
        fusion = check_fusion(fusion)
        probes = np.atleast_2d(np.asarray(probes, np.float32))
        if not len(self):
            return np.zeros((len(probes), 0), np.float32)
        if fusion == "mean":
            return probes @ self.templates.T
        return np.maximum.reduceat(probes @ self.faces.T, self.starts, axis=1)

    def pair_scores(self, other: SubjectSet, fusion: str | None = None, chunk: int = 2048) -> np.ndarray:
        """(S_self, S_other) fused similarity of every subject pair, computed in row chunks."""
        fusion = check_fusion(fusion)
        out = np.zeros((len(self), len(other)), np.float32)
        if not len(self) or not len(other):
            return out
        if fusion == "mean":
            for lo in range(0, len(self), chunk):
                out[lo:lo + chunk] = self.templates[lo:lo + chunk] @ other.templates.T
            return out
        starts = self.starts
        for lo in range(0, len(self), chunk):
            hi = min(len(self), lo + chunk)
            first, last = starts[lo], starts[hi - 1] + self.counts[hi - 1]
            per_face = other.scores(self.faces[first:last], "best")  # (faces of these subjects, S_other)
            out[lo:hi] = np.maximum.reduceat(per_face, starts[lo:hi] - first, axis=0)
        return out


def top_pairs(scores: np.ndarray, threshold: float, limit: int) -> list[tuple[int, int, float]]:
    """(row, column, score) of the highest-scoring cells at or above ``threshold``, best first."""
    rows, cols = np.nonzero(scores >= threshold)
    if len(rows) == 0:
        return []
    values = scores[rows, cols]
    order = np.argsort(-values, kind="stable")[:limit]
    return [(int(rows[i]), int(cols[i]), float(values[i])) for i in order]


# -- what a subject identification or a gallery match returns ----------------------------------------


@dataclass(frozen=True)
class SubjectCandidate:
    rank: int
    subject_id: int
    label: str
    gallery: str
    similarity: float
    above_threshold: bool
    false_match: FalseMatchEstimate | None
    faces: int  # enrolled faces of the subject
    best_face: int | None  # enrolled face (subject face id) closest to the probe


@dataclass
class IdentifyResult(Verdict):
    """A probe photo against the subjects of one or more galleries."""

    probe: ProbeFace | None
    galleries: list[str]
    subjects_searched: int
    comparisons: int
    fusion: str
    threshold: float
    threshold_rule: str
    candidates: list[SubjectCandidate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    audit_id: int | None = None  # the audit record of this identification, when it went through governance

    LEADS = "candidate subjects above the threshold: each needs human review"


@dataclass(frozen=True)
class PairCandidate:
    rank: int
    subject_a: int
    label_a: str
    subject_b: int
    label_b: str
    similarity: float
    above_threshold: bool
    false_match: FalseMatchEstimate | None


@dataclass
class MatchResult:
    """Two registries matched against each other: ranked candidate pairs of subjects."""

    gallery_a: str
    gallery_b: str
    subjects_a: int
    subjects_b: int
    pairs_compared: int
    comparisons: int  # face pairs behind the compared subject pairs (every enrolled face counts)
    fusion: str
    threshold: float
    threshold_rule: str
    pairs: list[PairCandidate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)
