"""What a search returns: typed results that the CLI prints and the API serialises."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class FalseMatchEstimate:
    """How often a different person scores this high, measured on the pack's calibration."""

    rate: float  # per comparison
    extrapolated: bool  # beyond the counted range: from the calibration's fitted tail
    expected_in_gallery: float  # rate x faces searched: chance matches this high per search
    fpir: float  # chance that a search of this gallery shows some different person this high
    words: str  # "about 1 in 50,000 different people score this high; ..."


@dataclass(frozen=True)
class Candidate:
    rank: int
    face_id: int
    similarity: float
    above_threshold: bool
    false_match: FalseMatchEstimate | None
    collection: str
    image_id: int
    image_source: str
    box: tuple[float, float, float, float]
    quality: float
    thumbnail: str | None
    media: str = "image"  # image | video
    timestamp_s: float | None = None  # video: when the face appears, seconds from the start
    track_id: int | None = None  # video: which face track
    track_span: tuple[float, float] | None = None  # video: first and last time the track is on screen
    # video: every face of the track, in time order (this one is the track's best-scoring face; the
    # others are folded into it so that top_k counts people-in-clips, not frames), and how many
    # of them scored among the hits
    track_faces: tuple[int, ...] = ()
    track_hits: int = 0


@dataclass(frozen=True)
class ProbeFace:
    source: str
    faces_in_image: int
    chosen: int
    rule: str
    box: tuple[float, float, float, float]
    quality: float
    quality_issues: tuple[str, ...]
    usable: bool
    face_boxes: tuple[tuple[float, float, float, float], ...] = ()  # every face of the photo, by index
    rotation: int = 0  # degrees clockwise the probe was turned to find its faces (boxes are of it as sent)


class Verdict:
    """For ranked results: whether any candidate clears the threshold, and the verdict in words."""

    LEADS = "candidate leads above the threshold: each needs human review"

    @property
    def confident(self) -> bool:
        return any(c.above_threshold for c in self.candidates)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["confident_match"] = self.confident
        out["verdict"] = self.LEADS if self.confident else "no confident match"
        return out


@dataclass
class SearchResult(Verdict):
    probe: ProbeFace | None
    collections: list[str]
    faces_searched: int
    threshold: float
    threshold_rule: str
    candidates: list[Candidate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    weaker_withheld: int = 0  # candidates below the threshold left out (data minimisation): count only
    audit_id: int | None = None  # the audit record of this search, when it went through governance

    def withhold_weaker(self, include_weaker: bool) -> int:
        """Data minimisation: keep only candidates above the threshold unless the user asked for weaker ones.

        Below the threshold a candidate is most likely a stranger (the threshold is where the chance
        of a different person scoring this high becomes small): showing them by default shows
        unrelated people's faces to the investigator. Returns how many were withheld."""
        if include_weaker:
            self.weaker_withheld = 0
            return 0
        keep = [c for c in self.candidates if c.above_threshold]
        self.weaker_withheld = len(self.candidates) - len(keep)
        self.candidates = keep
        return self.weaker_withheld
