"""Unknown-face clustering: group a collection's faces into unnamed identities.

This package owns: the k-NN graph over embeddings (:mod:`.knn`), the calibrated parameters
(:mod:`.params`), the linking rules (:mod:`.linker`), the clustering itself --
quality-aware sparse average-linkage, batch and incremental (:mod:`.core`) -- the
clustering metrics used to judge it (:mod:`.metrics`), and the Immich-style baseline it is
compared with (:mod:`.baseline`). It works on arrays (embeddings, quality); reading a
collection from the catalogue and storing labels belong to the caller.
"""

from facesearch.cluster.core import (
    ClusterParams,
    ClusterResult,
    ClusterState,
    IncrementalUpdate,
    cluster_faces,
    threshold_for_fmr,
)
from facesearch.cluster.knn import KnnGraph, build_knn_graph
from facesearch.cluster.metrics import Scores, bcubed_scores, pairwise_scores

__all__ = [
    "ClusterParams",
    "ClusterResult",
    "ClusterState",
    "IncrementalUpdate",
    "KnnGraph",
    "Scores",
    "bcubed_scores",
    "build_knn_graph",
    "cluster_faces",
    "pairwise_scores",
    "threshold_for_fmr",
]
