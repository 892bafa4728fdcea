"""Unknown-face clustering on LFW (and on synthetic faces at scale): facesearch vs an Immich-style baseline.

Data: every LFW image's primary-face embedding from the cache of ``bench/lfw_embeddings.py``
(13,232 faces, 5,748 people, 4,068 of them with a single photo); identity = folder name. The
cache is required: this bench never runs the detector (fill it with ``lfw_embeddings.py``).

Methods, both on the same embeddings:

- facesearch: :func:`facesearch.cluster.cluster_faces` with its defaults (sparse
  average-linkage over the k-NN graph; ``facesearch/cluster/core.py``).
- Immich-style: Immich's facial-recognition job (incremental DBSCAN, max cosine distance
  0.5, min 3 faces), re-implemented from Immich's source in
  ``facesearch/cluster/baseline.py`` (which says what was followed). Run in catalogue
  (path) order and in a seeded shuffled order, since its result depends on job order.

Metrics (``facesearch/cluster/metrics.py``): pairwise precision / recall / F1 and BCubed
precision / recall / F. **Unassigned faces count as singleton clusters**: on LFW, where
most people have one photo, "no cluster" is the right answer for them.

Quality: the cache records how each face was found (``how``), and on LFW every face is
``detected``, so there is no per-face quality to use: all LFW faces are treated as good
(quality 1) and the quality rule is exercised on the synthetic set only, where a share of
deliberately poor faces is generated with low quality scores (see below).

``--synthetic N`` adds a run at N synthetic faces (clearly not real faces): identities are
drawn in 512-d from a Gaussian fitted to LFW's between-identity covariance, faces from a
Gaussian fitted to LFW's within-identity covariance with a per-face noise scale (log-normal),
identity sizes resampled from LFW's; the bench prints the genuine / impostor cosine
statistics of both so the match can be judged. A share of faces (``--poor``) is made poor:
more noise plus a shared "generic face" component (poor faces resemble each other, the way
blurred or tiny faces do), with quality scores below the usable threshold. Beyond
``exact_limit`` the k-NN graph is the approximate bucket graph: its recall of the exact
graph's above-threshold edges is measured on sampled faces and printed.

    python bench/cluster_lfw.py --lfw ../shared/data/lfw --synthetic 50000
    python bench/cluster_lfw.py --lfw ../shared/data/lfw --synthetic-only --synthetic 1000000

On a machine with a CUDA GPU and PyTorch but no LFW copy (the model travels as a file):

    python bench/cluster_lfw.py --lfw ../shared/data/lfw --synthetic-only --save-face-model model.npz
    python bench/cluster_lfw.py --face-model model.npz --synthetic 1000000 --torch-exact
    python bench/cluster_lfw.py --face-model model.npz --synthetic 1000000 --torch-only --link-fmrs 1e-6 1e-7

The output of these runs is kept in ``docs/cluster_lfw_output.txt``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import zlib
from pathlib import Path

import faiss
import numpy as np

from facesearch.cluster import (
    ClusterParams,
    ClusterState,
    KnnGraph,
    bcubed_scores,
    build_knn_graph,
    cluster_faces,
    pairwise_scores,
)
from facesearch.cluster.baseline import IMMICH_MAX_DISTANCE, IMMICH_MIN_FACES, immich_style_cluster
from facesearch.cluster.knn import DEFAULT_ASSIGN, DEFAULT_EXACT_LIMIT
from lfw_embeddings import DEFAULT_CACHE, DEFAULT_PACK, image_paths, labels_of

SWEEP_K = (5, 10, 20)
SWEEP_LINK_FMR = (1e-4, 3e-5, 1e-5, 3e-6, 1e-6)


class Clock:
    """Wall and CPU (all threads) time since creation: the CPU figure is what the work costs on a
    shared machine, where the wall figure also counts waiting for the cores."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.wall

    def __str__(self) -> str:
        return f"{self.seconds:.1f} s wall / {time.process_time() - self.cpu:.1f} s CPU"


def load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} cores"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def load_cache(lfw: Path, cache: Path, pack: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(identity labels, embeddings, how) from the cache; exits when it is missing or stale."""
    paths = image_paths(lfw)
    if not cache.is_file():
        sys.exit(f"{cache}: no embedding cache; fill it first: python bench/lfw_embeddings.py --lfw {lfw}")
    with np.load(cache, allow_pickle=False) as data:
        key = f"{pack}/"
        if key + "paths" not in data.files or list(data[key + "paths"]) != paths:
            sys.exit(f"{cache}: no {pack} entry for the images under {lfw}; run bench/lfw_embeddings.py")
        embeddings = np.ascontiguousarray(data[key + "plain"], np.float32)
        how = data[key + "how"]
    return labels_of(paths), embeddings, how


def row(name: str, truth: np.ndarray, labels: np.ndarray, seconds: float, detail: str = "") -> str:
    pw, b3 = pairwise_scores(truth, labels), bcubed_scores(truth, labels)
    clusters = len(np.unique(labels[labels >= 0]))
    return (f"{name:<38} {pw.precision:7.4f} {pw.recall:7.4f} {pw.f1:7.4f}   {b3.precision:7.4f} {b3.recall:7.4f} "
            f"{b3.f1:7.4f}  {clusters:>8,} {np.mean(labels < 0):7.3f} {seconds:8.2f}  {detail}")


HEADER = (f"{'method':<38} {'pair P':>7} {'pair R':>7} {'pair F1':>7}   {'B3 P':>7} {'B3 R':>7} {'B3 F':>7}  "
          f"{'clusters':>8} {'unassgn':>7} {'seconds':>8}")


def with_self(graph: KnnGraph) -> tuple[np.ndarray, np.ndarray]:
    """k-NN lists with each face itself in front (as Immich's search returns it)."""
    n = len(graph.ids)
    return (np.concatenate([np.arange(n)[:, None], graph.ids], 1),
            np.concatenate([np.ones((n, 1), np.float32), graph.sims], 1))


def impure_clusters(truth: np.ndarray, labels: np.ndarray, top: int = 8) -> list[str]:
    """The clusters holding the most faces not of their majority identity, with the names."""
    out = []
    for label in np.unique(labels[labels >= 0]):
        names, counts = np.unique(truth[labels == label], return_counts=True)
        if len(names) > 1:
            order = np.argsort(-counts)
            out.append((int(counts.sum() - counts.max()),
                        ", ".join(f"{names[i]} x{counts[i]}" for i in order[:4]) + (" ..." if len(names) > 4 else "")))
    out.sort(key=lambda item: -item[0])
    return [f"  {n} stray: {text}" for n, text in out[:top]] + [f"  ({len(out)} clusters hold 2+ identities)"]


# -- LFW -----------------------------------------------------------------------------------------


def lfw_section(args, truth: np.ndarray, x: np.ndarray, how: np.ndarray, params: ClusterParams) -> None:
    kinds, counts = np.unique(how, return_counts=True)
    _, sizes = np.unique(truth, return_counts=True)
    print(f"LFW: {len(x):,} faces, {len(sizes):,} people ({int(np.sum(sizes == 1)):,} with one photo, "
          f"{int(np.sum(sizes == 2)):,} with two, largest {sizes.max()}); faces found: "
          + ", ".join(f"{k} {c:,}" for k, c in zip(kinds, counts)))
    print("Quality: no per-face quality in the cache (every face 'detected'): all treated as good (quality 1).")
    print(f"facesearch defaults: {params.describe()}")
    print("Unassigned faces count as singleton clusters in every metric.\n")

    graph = build_knn_graph(x, max(SWEEP_K), exact_limit=args.exact_limit)
    print(f"k-NN graph: {graph.mode}, k {graph.k}, {graph.seconds:.2f} s (shared by the sweep below); {load()}\n")
    print(HEADER)
    start = time.perf_counter()
    fs = cluster_faces(x, params=params)
    fs_seconds = time.perf_counter() - start
    print(row("facesearch (defaults)", truth, fs.labels, fs_seconds,
              f"knn {fs.timings['knn']:.2f} s + cluster {fs.timings['cluster']:.2f} s"))
    immich = immich_style_cluster(x)
    print(row("Immich-style, catalogue order", truth, immich.labels, immich.seconds,
              f"radius search {immich.timings['neighbours']:.2f} s + jobs {immich.timings['jobs']:.2f} s"))
    order = np.random.default_rng(args.seed).permutation(len(x))
    shuffled = immich_style_cluster(x, order=order)
    print(row(f"Immich-style, shuffled (seed {args.seed})", truth, shuffled.labels, shuffled.seconds))
    lowered = immich_style_cluster(x, min_faces=2)
    print(row("Immich-style, min faces lowered to 2", truth, lowered.labels, lowered.seconds,
              "(not Immich's default; shows what min size alone explains)"))
    start = time.perf_counter()
    bucket = cluster_faces(x, params=ClusterParams(**{**params.__dict__, "exact_limit": 0}))
    print(row("facesearch, bucket graph forced", truth, bucket.labels, time.perf_counter() - start,
              f"{bucket.graph_mode}"))
    verdict = bcubed_scores(truth, fs.labels).f1 - bcubed_scores(truth, immich.labels).f1
    print(f"\nBCubed F, facesearch minus Immich-style (catalogue order): {verdict:+.4f}\n")

    print("Clusters mixing identities (facesearch defaults); many are LFW label noise, not model errors:")
    print("\n".join(impure_clusters(truth, fs.labels)))

    if not args.no_sweep:
        sweep(args, truth, x, graph, params)
    incremental(args, truth, x, params, fs.labels)


def sweep(args, truth: np.ndarray, x: np.ndarray, graph: KnnGraph, params: ClusterParams) -> None:
    """The measurement behind the defaults: BCubed F over k, link FMR, min size and mutual-kNN.

    Also on two disjoint halves of the people (split by a hash of the name), clustered
    separately, so a choice that only fits one half would show.
    """
    halves = np.array([zlib.crc32(name.encode()) % 2 for name in truth.tolist()])
    print("\nParameter sweep on LFW (edge FMR 1e-4 throughout; BCubed F on all faces and on two disjoint halves "
          "of the people):")
    print(f"  {'k':>3} {'link FMR':>9} {'cos':>6} {'min':>4} {'mutual':>6}  {'B3 F all':>8} {'half A':>7} "
          f"{'half B':>7}  {'pair F1':>7}")
    settings = [(k, f, 2, False) for k in SWEEP_K for f in SWEEP_LINK_FMR]
    settings += [(params.k, params.link_fmr, 3, False), (params.k, params.link_fmr, 2, True),
                 (max(SWEEP_K), params.link_fmr, 2, True)]
    for k, fmr, min_size, mutual in settings:
        p = ClusterParams(**{**params.__dict__, "k": k, "link_fmr": fmr, "min_size": min_size, "mutual": mutual,
                             "link_threshold": None, "edge_threshold": None}).resolved()
        sub = KnnGraph(graph.ids[:, :k], graph.sims[:, :k], graph.mode, 0.0)
        labels = cluster_faces(x, params=p, graph=sub).labels
        parts = []
        for half in (0, 1):
            mask = halves == half
            parts.append(bcubed_scores(truth[mask], cluster_faces(x[mask], params=p).labels).f1)
        mark = "  <- default" if (k, fmr, min_size, mutual) == (params.k, params.link_fmr, params.min_size,
                                                                params.mutual) else ""
        print(f"  {k:>3} {fmr:>9g} {p.link_threshold:6.3f} {min_size:>4} {str(mutual):>6}  "
              f"{bcubed_scores(truth, labels).f1:8.4f} {parts[0]:7.4f} {parts[1]:7.4f}  "
              f"{pairwise_scores(truth, labels).f1:7.4f}{mark}")


def incremental(args, truth: np.ndarray, x: np.ndarray, params: ClusterParams, batch_labels: np.ndarray) -> None:
    """Cluster 90 % of the faces, add the rest in 10 ingests; compare with the batch run."""
    order = np.random.default_rng(args.seed + 1).permutation(len(x))
    base = int(len(x) * 0.9)
    state = ClusterState(params)
    start = time.perf_counter()
    state.add(x[order[:base]])
    first = time.perf_counter() - start
    print(f"\nIncremental: {base:,} faces clustered in {first:.2f} s, then 10 ingests of the remaining "
          f"{len(x) - base:,} (seeded order):")
    for chunk in np.array_split(order[base:], 10):
        update = state.add(x[chunk])
        print(f"  +{len(chunk)} faces: {update.timings['total']:.3f} s (knn {update.timings['knn']:.3f}); "
              f"{len(update.new_clusters)} new clusters, {len(update.grown)} grown, "
              f"{len(update.merges)} merges {update.merges if update.merges else ''}, "
              f"{update.relabelled_old} old faces relabelled")
    labels = np.empty(len(x), np.int64)
    labels[order] = state.labels()
    agree = pairwise_scores(np.where(batch_labels < 0, -1 - np.arange(len(x)), batch_labels), labels)
    print(f"  incremental: BCubed F {bcubed_scores(truth, labels).f1:.4f} "
          f"(batch {bcubed_scores(truth, batch_labels).f1:.4f}); same-cluster pairs shared with the batch run: "
          f"precision {agree.precision:.5f}, recall {agree.recall:.5f}")


# -- synthetic -----------------------------------------------------------------------------------


class FaceModel:
    """Gaussian identity / within-identity model fitted to LFW's embeddings (see module docstring)."""

    FIELDS = ("mean", "uw", "sw", "ub", "sb", "sizes", "generic")

    @classmethod
    def load(cls, path: Path) -> FaceModel:
        """A model saved by ``--save-face-model`` (lets a machine without LFW generate the same faces)."""
        model = cls.__new__(cls)
        with np.load(path) as data:
            for name in cls.FIELDS:
                setattr(model, name, data[name])
        return model

    def save(self, path: Path) -> None:
        np.savez(path, **{name: getattr(self, name) for name in self.FIELDS})

    def __init__(self, truth: np.ndarray, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        ids, inverse, sizes = np.unique(truth, return_inverse=True, return_counts=True)
        means = np.zeros((len(ids), x.shape[1]))
        np.add.at(means, inverse, x)
        means /= sizes[:, None]
        multi = sizes[inverse] >= 2
        resid = (x - means[inverse])[multi]
        correction = (sizes[inverse] / np.maximum(sizes[inverse] - 1, 1))[multi]
        within = (resid * correction[:, None]).T @ resid / multi.sum()
        between = np.cov(means[sizes >= 2].T) - within * np.mean(1 / sizes[sizes >= 2])
        self.mean = x.mean(axis=0)
        lw, self.uw = np.linalg.eigh(within)
        lb, self.ub = np.linalg.eigh(between)
        self.sw, self.sb = np.sqrt(np.clip(lw, 0, None)), np.sqrt(np.clip(lb, 0, None))
        self.sizes = sizes
        self.generic = self.mean / np.linalg.norm(self.mean)

    def generate(self, n: int, seed: int, poor_share: float, noise_sigma: float = 0.3, noise_scale: float = 1.0,
                 poor_noise: float = 1.6, poor_shift: float = 0.8):
        """(embeddings float32 unit rows, identity per face, quality per face, poor mask)."""
        rng = np.random.default_rng(seed)
        draw = rng.choice(self.sizes, size=int(n / self.sizes.mean() * 1.2) + 10)
        draw = draw[np.cumsum(draw) <= n]
        if draw.sum() < n:
            draw = np.append(draw, n - draw.sum())
        identity = np.repeat(np.arange(len(draw)), draw)
        ub = (self.ub * self.sb).T.astype(np.float32)  # rows scaled: z @ ub ~ N(0, between)
        uw = (self.uw * self.sw).T.astype(np.float32)
        centres = self.mean.astype(np.float32) + rng.standard_normal((len(draw), len(ub)), np.float32) @ ub
        scale = (noise_scale * np.exp(noise_sigma * rng.standard_normal(n) - noise_sigma ** 2 / 2)).astype(np.float32)
        poor = rng.random(n) < poor_share
        scale[poor] *= poor_noise
        out = np.empty((n, len(ub)), np.float32)
        for lo in range(0, n, 100_000):
            hi = min(n, lo + 100_000)
            block = centres[identity[lo:hi]] + scale[lo:hi, None] * (
                rng.standard_normal((hi - lo, len(uw)), np.float32) @ uw)
            block[poor[lo:hi]] += np.float32(poor_shift) * self.generic.astype(np.float32)
            out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
        quality = np.where(poor, rng.uniform(0.05, 0.25, n), rng.uniform(0.3, 1.0, n)).astype(np.float32)
        return out, identity, quality, poor


def score_stats(x: np.ndarray, truth: np.ndarray, seed: int = 0) -> str:
    """Genuine / impostor cosine statistics from sampled pairs (genuine: up to 40 faces per person)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(x), 200_000), rng.integers(0, len(x), 200_000)
    keep = truth[a] != truth[b]
    impostor = np.einsum("ij,ij->i", x[a[keep]], x[b[keep]])
    _, inverse = np.unique(truth, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(inverse.max() + 2))
    genuine = []
    for person in rng.permutation(len(bounds) - 1):
        members = order[bounds[person]:bounds[person + 1]][:40]
        if len(members) >= 2:
            gram = x[members] @ x[members].T
            genuine.append(gram[np.triu_indices(len(members), 1)])
        if sum(len(g) for g in genuine) > 100_000:
            break
    genuine = np.concatenate(genuine)
    return (f"genuine mean {genuine.mean():.3f} sd {genuine.std():.3f} 5th pct {np.quantile(genuine, 0.05):.3f}; "
            f"impostor mean {impostor.mean():.4f} sd {impostor.std():.4f} 99th pct {np.quantile(impostor, 0.99):.3f} "
            f"99.99th {np.quantile(impostor, 0.9999):.3f}")


def edge_recall(x: np.ndarray, graph: KnnGraph, threshold: float, samples: int, seed: int) -> tuple[float, float, int]:
    """Share of the exact graph's edges at or above ``threshold`` (within each face's k nearest) kept by
    ``graph``, and share of faces with such an edge that keep at least one; on sampled faces."""
    rng = np.random.default_rng(seed)
    probe = np.sort(rng.choice(len(x), min(samples, len(x)), replace=False))
    sims, ids = faiss.knn(x[probe], x, graph.k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    total = kept = faces = faces_kept = 0
    for r, face in enumerate(probe.tolist()):
        exact = {int(j) for j, s in zip(ids[r], sims[r]) if j != face and s >= threshold}
        if not exact:
            continue
        found = exact & set(graph.ids[face].tolist())
        total, kept = total + len(exact), kept + len(found)
        faces, faces_kept = faces + 1, faces_kept + bool(found)
    return kept / max(total, 1), faces_kept / max(faces, 1), total


def torch_exact_graph(x: np.ndarray, k: int, min_sim: float) -> KnnGraph:
    """The exact k-NN graph by brute force on a CUDA GPU (PyTorch, fp32 without TF32): the reference
    the bucket graph is judged against at sizes where a CPU brute force takes hours."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    clock = Clock()
    data = torch.from_numpy(x).cuda()
    n = len(x)
    sims = np.empty((n, k), np.float32)
    ids = np.empty((n, k), np.int64)
    step = 8192
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        block = data[lo:hi] @ data.T
        rows = torch.arange(hi - lo, device=data.device)
        block[rows, rows + lo] = -float("inf")
        top_s, top_i = torch.topk(block, k, dim=1)
        sims[lo:hi], ids[lo:hi] = top_s.cpu().numpy(), top_i.cpu().numpy()
    torch.cuda.synchronize()
    weak = sims < min_sim
    sims[weak], ids[weak] = -np.inf, -1
    return KnnGraph(ids, sims, f"exact (PyTorch brute force on {torch.cuda.get_device_name()})", clock.seconds,
                    min_sim)


def full_recall(exact: KnnGraph, approx: KnnGraph) -> tuple[float, float]:
    """Share of the exact graph's edges the approximate graph keeps, and of faces with an edge that keep one."""
    n, k = exact.ids.shape
    rows = np.repeat(np.arange(n), k)
    cols = exact.ids.ravel()
    valid = cols >= 0
    rows, cols = rows[valid], cols[valid]
    kept = (approx.ids[rows] == cols[:, None]).any(axis=1)
    per_face = np.zeros(n, np.int64)
    np.add.at(per_face, rows, kept)
    has = np.zeros(n, bool)
    has[rows] = True
    return float(kept.mean()), float(np.mean(per_face[has] > 0))


def synthetic_section(args, model: FaceModel, lfw_truth: np.ndarray | None, lfw_x: np.ndarray | None,
                      params: ClusterParams, n: int) -> None:
    print(f"\n=== SYNTHETIC faces (not real): {n:,} ===")
    clock = Clock()
    x, truth, quality, poor = model.generate(n, args.seed, args.poor)
    gen = clock.seconds
    _, sizes = np.unique(truth, return_counts=True)
    print(f"generated in {gen:.1f} s: {len(sizes):,} identities ({int(np.sum(sizes == 1)):,} single-face), "
          f"{int(poor.sum()):,} poor faces ({args.poor:.0%}, quality < {params.min_quality:g})")
    if lfw_x is not None:
        print(f"  LFW       {score_stats(lfw_x, lfw_truth)}")
    good = ~poor
    print(f"  synthetic {score_stats(x[good], truth[good])}  (good faces)")
    p_idx = np.nonzero(poor)[0][:2000]
    if len(p_idx) > 1:
        gram = x[p_idx] @ x[p_idx].T
        print(f"  poor-poor cosine (different people mostly) mean {gram[np.triu_indices(len(p_idx), 1)].mean():.3f}")

    p = params.resolved()
    print(f"({load()})")
    clock = Clock()
    if args.torch_only:
        graph = torch_exact_graph(x, p.k, p.edge_threshold)
    else:
        graph = build_knn_graph(x, p.k, min_sim=p.edge_threshold, exact_limit=p.exact_limit, assign=p.assign)
    print(f"k-NN graph: {graph.mode}: {clock}, peak RSS {peak_rss_gb():.1f} GB")
    if "buckets" in graph.mode:
        clock = Clock()
        recall, face_recall, edges = edge_recall(x, graph, p.edge_threshold, args.recall_samples, args.seed)
        print(f"  bucket graph vs exact on {args.recall_samples:,} sampled faces ({clock}): keeps {recall:.3f} of "
              f"{edges:,} exact edges >= {p.edge_threshold:.3f}; {face_recall:.3f} of faces with such an edge "
              f"keep at least one")
    print(HEADER)
    clock = Clock()
    fs = cluster_faces(x, quality, params=p, graph=graph)
    print(row("facesearch (quality used)", truth, fs.labels, graph.seconds + clock.seconds,
              f"graph {graph.seconds:.1f} s + cluster {clock}; peak RSS {peak_rss_gb():.1f} GB"))
    clock = Clock()
    blind = cluster_faces(x, None, params=p, graph=graph)
    print(row("facesearch (quality ignored)", truth, blind.labels, graph.seconds + clock.seconds))
    if n <= p.exact_limit:  # the cost of the approximate graph where the exact one is known
        clock = Clock()
        bucket = cluster_faces(x, quality, params=ClusterParams(**{**p.__dict__, "exact_limit": 0}))
        print(row("facesearch, bucket graph forced", truth, bucket.labels, clock.seconds, bucket.graph_mode))
    if args.torch_exact and not args.torch_only:
        exact = torch_exact_graph(x, p.k, p.edge_threshold)
        print(f"  exact graph on the GPU in {exact.seconds:.1f} s: {exact.mode}")
        if "buckets" in graph.mode:
            recall, face_recall = full_recall(exact, graph)
            print(f"  bucket graph vs exact, all {n:,} faces: keeps {recall:.4f} of the exact edges >= "
                  f"{p.edge_threshold:.3f}; {face_recall:.4f} of faces with such an edge keep at least one")
        clock = Clock()
        on_exact = cluster_faces(x, quality, params=p, graph=exact)
        print(row("facesearch on the exact graph", truth, on_exact.labels, exact.seconds + clock.seconds,
                  f"GPU graph {exact.seconds:.1f} s + cluster {clock}"))
        immich_exact = immich_style_cluster(x, knn=with_self(exact))
        print(row("Immich-style on the exact graph", truth, immich_exact.labels, immich_exact.seconds,
                  immich_exact.neighbour_mode))
    clock = Clock()
    immich = immich_style_cluster(x, knn=with_self(graph)) if n > p.exact_limit else immich_style_cluster(x)
    extra = graph.seconds if n > p.exact_limit else 0.0
    print(row("Immich-style, catalogue order", truth, immich.labels, clock.seconds + extra,
              f"{immich.neighbour_mode} ({clock}{' + the graph' if extra else ''}); peak RSS {peak_rss_gb():.1f} GB"))
    for fmr in args.link_fmrs:
        q = ClusterParams(**{**p.__dict__, "link_fmr": fmr, "link_threshold": None}).resolved()
        clock = Clock()
        labels = cluster_faces(x, quality, params=q, graph=graph).labels
        print(row(f"facesearch, link FMR {fmr:g} ({q.link_threshold:.3f})", truth, labels, clock.seconds))
    for name, labels in (("quality used", fs.labels), ("quality ignored", blind.labels)):
        on_poor = bcubed_scores(truth[good], labels[good])
        print(f"  facesearch, {name}: BCubed on the good faces only P {on_poor.precision:.4f} "
              f"R {on_poor.recall:.4f} F {on_poor.f1:.4f}; poor faces assigned {np.mean(labels[poor] >= 0):.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, help="LFW folder with images/NAME/*.jpg (required but with --face-model)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"embedding cache (default {DEFAULT_CACHE})")
    parser.add_argument("--pack", default=DEFAULT_PACK, help="model pack (default %(default)s)")
    parser.add_argument("--synthetic", type=int, nargs="*", default=[], metavar="N",
                        help="also cluster N synthetic faces (one run per N)")
    parser.add_argument("--synthetic-only", action="store_true", help="skip the LFW comparison (fits the model only)")
    parser.add_argument("--poor", type=float, default=0.03, help="share of poor faces in synthetic sets (default 0.03)")
    parser.add_argument("--exact-limit", type=int, default=DEFAULT_EXACT_LIMIT,
                        help="exact k-NN graph up to this many faces (default %(default)s)")
    parser.add_argument("--assign", type=int, default=DEFAULT_ASSIGN,
                        help="cells per face beyond it (default %(default)s)")
    parser.add_argument("--recall-samples", type=int, default=1000, help="faces checked against exact search")
    parser.add_argument("--no-sweep", action="store_true", help="skip the parameter sweep")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save-face-model", type=Path, help="write the synthetic-face model fitted to LFW here")
    parser.add_argument("--face-model", type=Path,
                        help="synthetic faces from this saved model, without LFW (implies --synthetic-only)")
    parser.add_argument("--torch-exact", action="store_true",
                        help="also build the exact graph on a CUDA GPU (PyTorch) and judge the bucket graph by it")
    parser.add_argument("--torch-only", action="store_true",
                        help="use the GPU-built exact graph for everything (skips the bucket graph)")
    parser.add_argument("--link-fmrs", type=float, nargs="*", default=[],
                        help="synthetic runs: also cluster the same graph at these link FMRs")
    args = parser.parse_args(argv)
    if args.face_model is None and args.lfw is None:
        parser.error("--lfw is required (or --face-model for synthetic faces only)")

    if args.face_model is not None:
        truth = x = how = None
        args.synthetic_only = True
    else:
        truth, x, how = load_cache(args.lfw, args.cache, args.pack)
    params = ClusterParams(pack=args.pack, exact_limit=args.exact_limit, assign=args.assign).resolved()
    print(f"facesearch cluster bench; FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    print(f"Immich-style baseline: max cosine distance {IMMICH_MAX_DISTANCE}, min faces {IMMICH_MIN_FACES}\n")
    if not args.synthetic_only:
        lfw_section(args, truth, x, how, params)
    if args.synthetic or args.save_face_model:
        model = FaceModel.load(args.face_model) if args.face_model is not None else FaceModel(truth, x)
        if args.save_face_model:
            model.save(args.save_face_model)
        for n in args.synthetic:
            synthetic_section(args, model, truth, x, params, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
