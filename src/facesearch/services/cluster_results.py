"""What the cluster service answers with: clusters, their members, an overview, a run's report and
the results of a person's edits; and what identifies a clustering configuration (:func:`params_key`).
The service is :mod:`facesearch.services.clusters`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from facesearch.catalog.clusters import ClusterStateInfo
from facesearch.cluster import ClusterParams
from facesearch.errors import FacesearchError


class ClusterError(FacesearchError):
    """A cluster edit that does not make sense (faces of another collection, merging one cluster, ...)."""


@dataclass(frozen=True)
class ClusterInfo:
    id: int
    collection: str
    name: str | None
    subject_id: int | None
    size: int  # faces shown (opted-out faces are not)
    pinned: int  # of them, placed by a person
    created_by: str
    created_at: str
    updated_at: str
    samples: tuple[int, ...] = ()  # face ids, best quality first


@dataclass(frozen=True)
class ClusterMember:
    face_id: int
    pinned: bool
    quality: float
    assigned_by: str
    image_id: int
    has_thumbnail: bool


@dataclass
class ClusterDetail:
    cluster: ClusterInfo
    faces: list[ClusterMember]


@dataclass
class ClusterOverview:
    collection: str
    faces: int  # in the collection
    in_clusters: int  # shown in a cluster
    unassigned: int
    clusters: list[ClusterInfo]  # largest first
    total_clusters: int
    state: ClusterStateInfo | None


@dataclass
class ClusterRun:
    collection: str
    mode: str  # full | incremental | none
    reason: str
    faces: int  # in the collection
    faces_processed: int  # placed by this run
    suppressed: int  # skipped: they match an opt-out request
    clusters: int  # non-empty clusters after the run
    in_clusters: int
    unassigned: int
    new_clusters: list[int] = field(default_factory=list)
    grown: list[int] = field(default_factory=list)
    merged: list[tuple[int, int]] = field(default_factory=list)  # (kept, absorbed)
    params: str = ""
    graph: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MergeResult:
    cluster_id: int  # the one kept
    merged: list[int]  # absorbed (deleted)
    faces_moved: int


@dataclass
class EditResult:
    cluster_id: int | None  # where the faces are now (None: out of every cluster)
    faces: list[int]
    emptied: list[int]  # clusters left without a face, deleted


def params_key(params: ClusterParams) -> dict:
    """What identifies a clustering configuration (stored with the state; a change forces a full run)."""
    data = asdict(params)
    data.pop("threshold_source", None)
    return json.loads(json.dumps(data))  # as stored (tuples become lists), so an unchanged key compares equal
