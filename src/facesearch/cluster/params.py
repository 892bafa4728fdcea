"""Clustering's parameters and results: the defaults (false-match rates of the shipped calibration,
with the measurements that chose them), :class:`ClusterParams` and what a run returns
(:class:`ClusterResult`, :class:`IncrementalUpdate`). The algorithm is :mod:`facesearch.cluster.core`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from facesearch.cluster.knn import DEFAULT_ASSIGN, DEFAULT_EXACT_LIMIT
from facesearch.models.calibration import Calibration, load_calibration, threshold_at_fmr
from facesearch.pipeline.quality import USABLE_QUALITY

#: Defaults, chosen on LFW by the sweep in ``bench/cluster_lfw.py`` (``docs/cluster_lfw_output.txt``),
#: BCubed F on all 13,232 faces, edge FMR 1e-4 throughout:
#:   link FMR 1e-4 (cos 0.280) 0.969 | 3e-5 (0.308) 0.986 | **1e-5 (0.336) 0.9925** | 3e-6 (0.365) 0.992 |
#:   1e-6 (0.391) 0.991; the same order on two disjoint halves of the people (0.9955 / 0.9940 at 1e-5).
#:   k 5, 10, 20: identical at 1e-5. min size 3 instead of 2: 0.966 (LFW's 779 two-photo people are
#:   lost). mutual k-NN: 0.964 at k 10, 0.983 at k 20 (big identities fall apart): off.
#: The edge floor (1e-4) only admits candidates; the linkage test decides, so an edge floor equal
#: to the link threshold gave the same result on LFW.
#: Size matters: a face meets ~n x FMR impostors above the link threshold. On 1M synthetic faces
#: (exact graph built on a GPU) link FMR 1e-6 (cos 0.391) scored BCubed F 0.990 against 0.981 at
#: 1e-5 and 0.976 at 1e-7; for collections far larger than LFW pass a stricter ``link_fmr``.
DEFAULT_EDGE_FMR = 1e-4
DEFAULT_LINK_FMR = 1e-5
#: Attachment (stage 2, :mod:`facesearch.cluster.attach`): an unassigned face joins a cluster when at
#: least ``attach_support`` of its k nearest neighbours are core members of that one cluster, each at
#: or above the cosine of ``attach_fmr``, and no other cluster has that support. Swept on LFW and on
#: the harder LFW set of ``bench/cluster_hard.py`` (BCubed P / F; docs/accuracy.md): support 2 at
#: attach FMR 3e-6 (cos 0.365) raised F on both (LFW 0.9925 -> 0.9928, hard 0.9900 -> 0.9905) at the
#: same precision and left fewer faces out; FMR 1e-4 (cos 0.280, the edge floor) with support 2
#: dropped precision to 0.94 (a big cluster -- Bush's 530 photos -- always has two members that look
#: like any face at that rate); 1e-5 cost 0.001-0.003 of precision. With ``link_fmr=3e-6`` the cores
#: are tighter: BCubed P >= 0.99 on the hard set (0.9925) and F 0.9915 / LFW 0.9936, but 1.3 % of the
#: faces of people with 2+ photos stay unassigned there instead of 0.7 %.
#: One comparison (a group founded on a single cosine, :meth:`facesearch.cluster.linker.Linker._link`):
#: on the harder LFW set almost all the precision lost was single-photo people paired with one
#: another at cos 0.336-0.40 (about 50 such pairs; 20 more are LFW's own label errors: one photo
#: under two names, twins). At those cosines genuine and impostor pairs are about equally common
#: and no other evidence we tried told them apart (margin to the next neighbour, shared or mutual
#: neighbours, local scaling; docs/accuracy.md), so the one cosine must be stronger than the link's.
#: Hard set, B3 P / unassigned (2+), 2-supporter attachment only: pairs at the link rate 0.9883 /
#: 0.7 %, at 6e-6 (default, :data:`DEFAULT_PAIR_FMR`) 0.9907 / 0.9 %, at the attach rate (the previous
#: default) 0.9915 / 1.2 %; LFW P 0.9907 -> 0.9926 / 0.9932.
DEFAULT_ATTACH_FMR = 3e-6
DEFAULT_ATTACH_SUPPORT = 2
#: Wide attachment (issue 17, second rule of :mod:`facesearch.cluster.attach`): a face also joins a
#: core when **4** of its k nearest neighbours are members of that one core at or above the cosine of
#: a per-comparison FMR of **3e-5** (0.308) -- for a core of at most k members; a larger core of n
#: members needs the rate divided by n / k (rounded up to a power of two), so that the number of the
#: core's members one different person is expected to reach, n x FMR, never exceeds k x 3e-5. A big
#: cluster (Bush's 530 photos) always has a few members like any face at a fixed rate: without the
#: scaling stage 2 put 27 wrong faces (and 8 right ones) into clusters on LFW, with it 3 (and 8).
#: Chosen on the harder LFW set (bench/cluster_hard.py, docs/accuracy.md; pairs at 6e-6), faces
#: stage 2 attached right / wrong: the 2-supporter rule alone 6 / 0; with 3 more supporters at 1e-5
#: 8 / 1, 3 at 3e-5 14 / 16, 5 at 1e-4 10 / 9, **4 at 3e-5 11 / 3** (hard-set cores hardly exceed k, so
#: the scaling does not act there). Its cores are of LFW's 5,749 people, the rule was chosen on them:
#: a second, independent set has not judged it.
DEFAULT_ATTACH_WIDE_FMR = 3e-5
DEFAULT_ATTACH_WIDE_SUPPORT = 4
#: how many halvings of the wide rate are tabulated (cores up to k x 2^24 members)
WIDE_STEPS = 25
#: One comparison: a group founded on a single cosine (two single faces) needs FMR 6e-6 (cos 0.348),
#: between the link's 1e-5 and the attachment's 3e-6 (the sweep is in the comment above).
DEFAULT_PAIR_FMR = 6e-6
DEFAULT_K = 10
DEFAULT_MIN_SIZE = 2
DEFAULT_PACK = "buffalo_s"


def threshold_for_fmr(fmr: float, calibration: Calibration) -> float:
    """The cosine at which ``fmr`` of the calibration's impostor pairs score at or above it
    (:func:`facesearch.models.calibration.threshold_at_fmr`, the one rule)."""
    return threshold_at_fmr(calibration, fmr)


@dataclass(frozen=True)
class ClusterParams:
    """How faces are grouped (the module docstring explains each rule; the defaults above, why).

    Thresholds are false-match rates of the pack's calibration (``edge_fmr``, ``link_fmr``);
    ``edge_threshold`` / ``link_threshold`` given as cosines override them. ``min_quality``
    is the pipeline's "unusable for search" score (:data:`USABLE_QUALITY`): faces below it
    are leaves. Beyond ``exact_limit`` faces the k-NN graph is approximate (``assign`` cells
    per face, :mod:`facesearch.cluster.knn`).
    """

    k: int = DEFAULT_K
    edge_fmr: float = DEFAULT_EDGE_FMR
    link_fmr: float = DEFAULT_LINK_FMR
    edge_threshold: float | None = None
    link_threshold: float | None = None
    attach_fmr: float = DEFAULT_ATTACH_FMR
    attach_threshold: float | None = None
    attach_support: int = DEFAULT_ATTACH_SUPPORT  # 0 turns attachment off
    #: the wide rule (4 supporters at a size-scaled 3e-5; 0 turns it off) and its cosines, one per
    #: halving of the rate (filled by :meth:`resolved`; :meth:`wide_thresholds` picks by core size)
    attach_wide_support: int = DEFAULT_ATTACH_WIDE_SUPPORT
    attach_wide_fmr: float = DEFAULT_ATTACH_WIDE_FMR
    attach_wide_table: tuple[float, ...] | None = None
    #: a group founded on one comparison (two single faces): its rate (default 6e-6), or its cosine;
    #: both None = the stricter of the link's and the attachment's cosines (:attr:`one_comparison_threshold`)
    pair_fmr: float | None = DEFAULT_PAIR_FMR
    pair_threshold: float | None = None
    min_size: int = DEFAULT_MIN_SIZE
    min_quality: float = USABLE_QUALITY
    mutual: bool = False
    pack: str = DEFAULT_PACK
    exact_limit: int = DEFAULT_EXACT_LIMIT
    assign: int = DEFAULT_ASSIGN
    threshold_source: str = ""  # set by resolved(): where the cosines came from

    def resolved(self, calibration: Calibration | None = None) -> ClusterParams:
        """A copy with both cosine thresholds filled in from the calibration where not given."""
        if self.edge_threshold is not None and self.link_threshold is not None and self.attach_threshold is not None:
            return self._with_wide(self._with_pair(None), None)
        calibration = calibration or load_calibration(self.pack)
        if calibration is None:
            raise ValueError(f"pack {self.pack!r} has no calibration: give edge_threshold and link_threshold")
        return replace(
            self._with_wide(self._with_pair(calibration), calibration),
            edge_threshold=self.edge_threshold if self.edge_threshold is not None
            else threshold_for_fmr(self.edge_fmr, calibration),
            link_threshold=self.link_threshold if self.link_threshold is not None
            else threshold_for_fmr(self.link_fmr, calibration),
            attach_threshold=self.attach_threshold if self.attach_threshold is not None
            else threshold_for_fmr(self.attach_fmr, calibration),
            threshold_source=f"the {calibration.pack} calibration ({calibration.impostor_pairs:,} impostor pairs)")

    def _with_pair(self, calibration: Calibration | None) -> ClusterParams:
        if self.pair_threshold is not None or self.pair_fmr is None:
            return self
        calibration = calibration or load_calibration(self.pack)
        if calibration is None:
            raise ValueError(f"pack {self.pack!r} has no calibration: give pair_threshold")
        return replace(self, pair_threshold=threshold_for_fmr(self.pair_fmr, calibration))

    def _with_wide(self, params: ClusterParams, calibration: Calibration | None) -> ClusterParams:
        if not params.attach_wide_support or params.attach_wide_table is not None:
            return params
        calibration = calibration or load_calibration(params.pack)
        if calibration is None:
            raise ValueError(f"pack {params.pack!r} has no calibration: give attach_wide_table or no wide rule")
        table = tuple(threshold_for_fmr(params.attach_wide_fmr / 2 ** step, calibration) for step in range(WIDE_STEPS))
        return replace(params, attach_wide_table=table)

    def wide_thresholds(self, core_sizes: np.ndarray) -> np.ndarray:
        """The wide rule's cosine for cores of these sizes (resolved params only): the cosine of
        ``attach_wide_fmr`` up to ``k`` members, of the rate halved once per doubling beyond, so that
        n x FMR (different people's expected supporters in a core of n) never exceeds k x ``attach_wide_fmr``."""
        if self.attach_wide_table is None:
            raise ValueError("resolve the parameters first (ClusterParams.resolved)")
        ratio = np.maximum(np.asarray(core_sizes, np.float64), 1.0) / self.k
        steps = np.ceil(np.log2(np.maximum(ratio, 1.0)) - 1e-9).astype(np.int64)
        return np.asarray(self.attach_wide_table, np.float64)[np.minimum(steps, len(self.attach_wide_table) - 1)]

    @property
    def one_comparison_threshold(self) -> float:
        """The cosine a merge resting on one comparison must reach (resolved params only).

        ``pair_threshold`` (or ``pair_fmr``) when given, never below the link; else the stricter of
        the link and the attachment cosines: a cluster is never founded on one cosine weaker than
        what a face needs to attach to an existing cluster."""
        if self.link_threshold is None or self.attach_threshold is None:
            raise ValueError("resolve the parameters first (ClusterParams.resolved)")
        if self.pair_threshold is not None:
            return max(self.pair_threshold, self.link_threshold)
        return max(self.link_threshold, self.attach_threshold)

    def describe(self) -> str:
        p = self.resolved()
        fmr = (f"FMR {p.edge_fmr:g} / {p.link_fmr:g} of {p.threshold_source}: " if p.threshold_source else "")
        attach = (f"; attach with {p.attach_support} neighbours in one cluster at cos >= {p.attach_threshold:.3f} "
                  f"(FMR {p.attach_fmr:g})" if p.attach_support else "")
        if p.attach_support and p.attach_wide_support and p.attach_wide_table:
            attach += (f" or {p.attach_wide_support} at cos >= {p.attach_wide_table[0]:.3f} (FMR {p.attach_wide_fmr:g} "
                       f"per comparison for clusters of up to {p.k}, halved per doubling beyond)")
        return (f"k {p.k}{' mutual' if p.mutual else ''}; {fmr}edge cos >= {p.edge_threshold:.3f}, "
                f"average link >= {p.link_threshold:.3f} (a group founded on one comparison: "
                f">= {p.one_comparison_threshold:.3f}); min size {p.min_size}; "
                f"faces below quality {p.min_quality:g} are leaves{attach}; faces of one image never share a cluster")


@dataclass
class ClusterResult:
    """Labels of every face (``-1`` = unassigned) and how they were obtained."""

    labels: np.ndarray  # (n,) int64
    params: ClusterParams  # resolved: both thresholds are cosines
    graph_mode: str
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def sizes(self) -> dict[int, int]:
        """Faces per cluster label (unassigned faces excluded)."""
        labels, counts = np.unique(self.labels[self.labels >= 0], return_counts=True)
        return dict(zip(labels.tolist(), counts.tolist()))

    @property
    def n_clusters(self) -> int:
        return len(np.unique(self.labels[self.labels >= 0]))

    @property
    def unassigned_fraction(self) -> float:
        return float(np.mean(self.labels < 0)) if len(self.labels) else 0.0


@dataclass
class IncrementalUpdate:
    """What one :meth:`ClusterState.add` changed."""

    positions: np.ndarray  # positions given to the new faces
    labels: np.ndarray  # their labels (-1 = unassigned)
    new_clusters: list[int]  # labels created by this add
    grown: list[int]  # existing labels that gained faces
    merges: list[tuple[int, int]]  # (kept label, absorbed label): the absorbed label no longer exists
    relabelled_old: int  # old faces whose label changed (joined a group, or absorbed by a merge)
    timings: dict[str, float] = field(default_factory=dict)
