"""1:N search at scale: real LFW mates planted among N synthetic distractors with face-like statistics.

Gallery = the first photo of each LFW person with 2+ photos (the planted mates) + N synthetic
distractor embeddings, shuffled together (ids = row numbers); probes = ``--queries`` other
photos of those people (seeded sample). Real embeddings as probes matter: on this data
approximate indexes lose true mates that isotropic test vectors would find.

Distractors: a Gaussian fitted to real LFW embeddings (mean + full 512x512 covariance),
sampled and L2-normalised. By default it is fitted on the 4,068 single-photo people only,
who are never planted, so the probes' identities do not leak into the distractors
(``--fit-on all``: every person, each weighted equally so George W. Bush's 530 photos do not
dominate). With one photo per synthetic person this equals the per-identity model (centre ~
N(mu, Sigma_between) + within-person noise): its marginal is the same Gaussian. Mixtures of
Gaussians (k-means clusters of people, shrunk covariances) fitted on the same held-out
people did not fit the tail better; fitted on all people they did, but only by copying the
probes' own identities. The script checks the fit before using it: the distractor-vs-probe
cosine distribution (mean, std, p99, p99.9, p99.99, max, share >= 0.25 / 0.30, and the mean
per-probe maximum over 4,068 faces) is printed next to LFW's real impostor distribution and
next to uniform random vectors, which are far too easy (mean 0, std 0.044).

Settings (``--backends faiss``), each at every ``--sizes`` N:
- ``exact``: ``FaissIndex`` with ``exact_limit`` above N (the ground truth of the ANN rows);
- ``binary s=64/128/256/512``: ``FaissIndex(exact_limit=1, shortlist=s)``: 512-bit sign codes
  + exact re-rank of the Hamming shortlist (one build, shortlist changed between rows);
- ``hnsw32 ef=128/512``: raw ``faiss.IndexHNSWFlat`` (M 32, efConstruction 40), for comparison;
  skipped with a note when its build exceeds ``--hnsw-max-seconds``;
- ``ivf<nlist>,Flat np=32/128``: raw ``faiss.IndexIVFFlat`` (spherical k-means on a sample).
  (``--raw none`` skips the two raw FAISS families.)

``--backends milvus`` runs the same measurements through ``facesearch.index.open_index("milvus")``
(milvus-lite, FLAT) at 10k, 50k, 100k, ... 2M until a build exceeds ``--milvus-max-seconds``
(or the previous one projects, linearly, past it).

Per row: build seconds, bytes per face (process RSS growth / gallery size, and the index's own
nominal figure; for milvus its on-disk size), single-query p50/p99 (one query at a time after
warm-up; at most ``--latency-seconds`` per row, ``(n)`` queries) with faiss's default OpenMP
threads and again with one thread (``1T``: on a shared 2-core machine a second OpenMP thread
that gets descheduled stalls a single query for a time slice), batched queries/s (best of 2
calls with all probes), hit@1 of the true mate, the mate in the top 10, and the ANN-induced
miss rate: share of probes whose true mate the exact search ranks first but the index does not
return in its top 10.

After the binary rows: the mate's Hamming rank among all codes (how close the shortlist came to
losing it), and the miss rate *predicted* for each shortlist from a tail of impostor cosines
(Hamming distance of sign codes at cosine c ~ 512/m Binomial(m, acos(c)/pi), m measured on the
index's rotation). The prediction from the Gaussian distractors' own tail checks the model
against the measurement; the one from LFW's real tail says what real faces would do, since
the Gaussian's extreme tail is lighter than real faces'.

    python bench/search_scale.py --lfw ../shared/data/lfw --sizes 20000 --queries 200   # quick check
    python bench/search_scale.py --lfw ../shared/data/lfw --sizes 100000,1000000
    python bench/search_scale.py --lfw ../shared/data/lfw --backends milvus --milvus-max-seconds 600
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from facesearch.eval.synthetic import GaussianFaces as Gaussian
from facesearch.index import FaissIndex, open_index
from lfw_embeddings import DEFAULT_CACHE, DEFAULT_PACK, load_or_compute

K = 10
TARGET_P50_MS = 10.0
TARGET_MISS = 0.01


# -- memory -------------------------------------------------------------------------------------


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- distractor model ---------------------------------------------------------------------------


def uniform_unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Distribution:
    """Streaming summary of many cosines: moments, max and a fine histogram for quantiles."""

    def __init__(self, bins: int = 16_000) -> None:
        self.edges = np.linspace(-1.0, 1.0, bins + 1)
        self.hist = np.zeros(bins, np.int64)
        self.n, self.total, self.squares, self.max = 0, 0.0, 0.0, -np.inf

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64).ravel()
        if not len(values):
            return
        self.hist += np.histogram(np.clip(values, -1, 1), self.edges)[0]
        self.n += len(values)
        self.total += values.sum()
        self.squares += (values**2).sum()
        self.max = max(self.max, float(values.max()))

    def quantile(self, q: float) -> float:
        cum = np.cumsum(self.hist)
        return float(self.edges[1:][np.searchsorted(cum, q * self.n)])

    def summary(self) -> dict:
        mean = self.total / self.n
        return {"pairs": self.n, "mean": mean, "std": float(np.sqrt(max(self.squares / self.n - mean**2, 0))),
                "p99": self.quantile(0.99), "p99.9": self.quantile(0.999), "p99.99": self.quantile(0.9999),
                "max": self.max, "rate_ge_0.25": self.rate_at_least(0.25), "rate_ge_0.30": self.rate_at_least(0.30)}

    def rate_at_least(self, value: float) -> float:
        return float(self.hist[np.searchsorted(self.edges, value, side="left"):].sum() / self.n)


def impostor_check(embeddings: np.ndarray, labels: np.ndarray, probes: np.ndarray, probe_labels: np.ndarray,
                   model: Gaussian, seed: int, sample: int = 100_000) -> tuple[dict, dict]:
    """The distractor model next to LFW's real impostor cosines and uniform random vectors.

    ``probe_max`` = mean over probes of the highest impostor cosine among ``probe_max_over``
    faces (the same count for the real single-photo people, the synthetic and the uniform rows).
    Also returns the probe-vs-impostor cosines of the real single-photo people and of as many
    synthetic distractors (pooled histogram + per-probe matrix) for :func:`predicted_code_misses`.
    """
    tails = {}
    ok = np.linalg.norm(embeddings, axis=1) > 0
    emb, lab = embeddings[ok], labels[ok]
    out = {}
    real_all = Distribution()
    for lo in range(0, len(emb), 2048):
        sims = emb[lo:lo + 2048] @ emb.T
        real_all.add(sims[lab[lo:lo + 2048, None] != lab[None, :]])
    out["LFW: all different-person pairs"] = real_all.summary()

    def row(sims: np.ndarray, other: np.ndarray | None, over: int, tail: str = "") -> dict:
        dist = Distribution()
        dist.add(sims if other is None else sims[other])
        masked = sims if other is None else np.where(other, sims, -1)
        if tail:
            tails[tail] = (dist, np.ascontiguousarray(sims[:, :over]))
        return {**dist.summary(), "probe_max": float(masked[:, :over].max(1).mean()), "probe_max_over": over}

    names, first, counts = np.unique(lab, return_index=True, return_counts=True)
    sims = probes @ emb[first].T
    out[f"probes vs LFW first photos ({len(first):,} people)"] = row(
        sims, probe_labels[:, None] != names[None, :], len(first))
    singles = first[counts == 1]
    out[f"probes vs LFW single-photo people ({len(singles):,})"] = row(probes @ emb[singles].T, None, len(singles),
                                                                         "real LFW")

    synthetic = np.empty((sample, emb.shape[1]), np.float32)
    model.sample_into(synthetic, None, sample, seed)
    out[f"probes vs {sample:,} Gaussian distractors"] = row(probes @ synthetic.T, None, len(singles), "Gaussian")
    del synthetic
    out[f"probes vs {sample:,} uniform random unit vectors"] = row(
        probes @ uniform_unit(sample, emb.shape[1], seed + 1).T, None, len(singles))
    return out, tails


# -- how far the binary shortlist is from losing the mate ----------------------------------------------


def mate_code_ranks(index: FaissIndex, gallery: np.ndarray, probes: np.ndarray, mate_ids: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """Hamming distance probe -> mate and the mate's rank among all codes (ties split evenly).

    Reads the index's private ``_codes`` / ``_sign_codes`` (diagnostic only; None if they change).
    """
    codes, sign = getattr(index, "_codes", None), getattr(index, "_sign_codes", None)
    if codes is None or sign is None:
        return None
    q = sign(probes)
    d = np.unpackbits(q ^ sign(gallery[mate_ids]), axis=1).sum(1).astype(np.int64)
    ranks = np.empty(len(q))
    for i in range(len(q)):
        lims, dist, _ = codes.range_search(q[i:i + 1], int(d[i]) + 1)  # distance < radius, i.e. <= d
        closer = int((dist < d[i]).sum())
        tied = int(lims[1]) - closer - 1  # minus the mate itself
        ranks[i] = 1 + closer + tied / 2
    return d, ranks


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])


def _hamming_closer(cosines: np.ndarray, bits: int, effective_bits: float) -> np.ndarray:
    """P(H < d) + P(H = d) / 2 for d = 0..bits (one row per cosine): H, the Hamming distance of the sign codes
    of two vectors at that cosine, modelled as (bits / m) * Binomial(m, angle / pi). m = ``effective_bits``
    (> bits: the rows of an orthogonal rotation make the bits less variable than independent ones)."""
    m = int(round(effective_bits))
    p = np.clip(np.arccos(np.clip(cosines, -1, 1)) / np.pi, 1e-12, 1 - 1e-12)[:, None]
    k = np.arange(m + 1)[None, :]
    lf = _log_factorials(m)
    pmf = np.exp(lf[m] - lf[k] - lf[m - k] + k * np.log(p) + (m - k) * np.log1p(-p))
    below = np.cumsum(pmf, 1) - pmf
    at = np.rint(np.arange(bits + 1) * m / bits).astype(int)
    return below[:, at] + pmf[:, at] / 2


def effective_bits(sign, dim: int, bits: int, cosine: float = 0.2, pairs: int = 20_000, seed: int = 5) -> float:
    """m with var(H) = bits^2 / m * p (1 - p), measured on random pairs at ``cosine`` through ``sign``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((pairs, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    u = rng.standard_normal((pairs, dim)).astype(np.float32)
    u -= (u * x).sum(1, keepdims=True) * x
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    h = np.unpackbits(sign(x) ^ sign(cosine * x + np.sqrt(1 - cosine**2) * u), axis=1).sum(1)
    p = np.arccos(cosine) / np.pi
    return float(bits**2 * p * (1 - p) / h.var())


def _poisson_at_least(mean: np.ndarray, s: int) -> np.ndarray:
    """P(X >= s) for X ~ Poisson(mean), elementwise."""
    k = np.arange(s)[None, :]
    lam = np.maximum(mean, 1e-300)[:, None]
    below = np.exp(-lam + k * np.log(lam) - _log_factorials(s)[:s][None, :]).sum(1)
    return np.clip(1 - below, 0, 1)


def predicted_code_misses(tails: dict, d_mate: np.ndarray, keep: np.ndarray, n: int, shortlists: list[int],
                          m_eff: float, bits: int = 512) -> dict:
    """Share of probes whose mate would fall outside each shortlist, if the n distractors' cosines to the
    probes followed each tail: expected count closer in Hamming = n * E[P(H < d_mate) + P(H = d_mate) / 2]
    (H as in :func:`_hamming_closer`), the count closer ~ Poisson.
    ``pooled`` uses all probes' impostor cosines for every probe; ``per probe`` each probe's own
    (captures that some probes have more lookalikes than others; noisier)."""
    out = {}
    for name, (dist, per_probe) in tails.items():
        centres = (dist.edges[:-1] + dist.edges[1:]) / 2
        used = dist.hist > 0
        table = np.zeros((len(centres), bits + 1))
        table[used] = _hamming_closer(centres[used], bits, m_eff)
        pooled = (n * (dist.hist / dist.n) @ table)[d_mate[keep]]
        bins = np.clip(np.searchsorted(dist.edges, per_probe[keep], side="right") - 1, 0, len(centres) - 1)
        need = np.unique(bins)
        table[need] = _hamming_closer(centres[need], bits, m_eff)
        own = n * table[bins, d_mate[keep][:, None]].mean(1)
        out[f"{name} tail, pooled"] = {str(s): float(_poisson_at_least(pooled, s).mean()) for s in shortlists}
        out[f"{name} tail, per probe"] = {str(s): float(_poisson_at_least(own, s).mean()) for s in shortlists}
    return out


# -- the planted benchmark -------------------------------------------------------------------------


@dataclass
class Plant:
    mates: np.ndarray  # (P, d) first photo of each 2+ person
    probes: np.ndarray  # (Q, d)
    probe_person: np.ndarray  # (Q,) index into mates
    probe_paths: list[str]
    probe_labels: np.ndarray  # (Q,) person name
    people: int
    names: list[str]  # the planted people


def plant(paths, labels, embeddings, how, queries: int, seed: int) -> Plant:
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(labels.tolist()):
        if how[i] != "none":
            rows.setdefault(name, []).append(i)
    planted = [(name, r) for name, r in sorted(rows.items()) if len(r) >= 2]
    multi = [r for _, r in planted]
    candidates = np.array([(p, i) for p, r in enumerate(multi) for i in r[1:]])
    rng = np.random.default_rng(seed)
    chosen = candidates[np.sort(rng.choice(len(candidates), size=min(queries, len(candidates)), replace=False))]
    return Plant(embeddings[[r[0] for r in multi]], np.ascontiguousarray(embeddings[chosen[:, 1]]), chosen[:, 0],
                 [paths[i] for i in chosen[:, 1]], labels[chosen[:, 1]], len(multi),
                 [name for name, _ in planted])


def build_gallery(p: Plant, model: Gaussian, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gallery rows (mates at seeded random positions among n distractors) and each probe's mate id."""
    total = n + len(p.mates)
    perm = np.random.default_rng([seed, 7]).permutation(total)
    mate_pos = perm[:len(p.mates)]
    distractor_rows = np.sort(perm[len(p.mates):])
    gallery = np.empty((total, p.mates.shape[1]), np.float32)
    model.sample_into(gallery, distractor_rows, n, seed)
    gallery[mate_pos] = p.mates
    return gallery, mate_pos[p.probe_person]


# -- settings ----------------------------------------------------------------------------------


@dataclass
class Row:
    backend: str
    setting: str
    size: int
    gallery: int
    build_s: float | None = None
    bytes_per_face_rss: float | None = None
    bytes_per_face_nominal: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    latency_queries: int = 0
    p50_1t_ms: float | None = None  # the same loop with faiss.omp_set_num_threads(1)
    p99_1t_ms: float | None = None
    batch_qps: float | None = None
    hit1: float | None = None
    mate_in_top10: float | None = None
    ann_miss: float | None = None
    ann_miss_count: int | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def time_single(search, probes: np.ndarray, budget_s: float, warmup: int = 10) -> tuple[float, float, int]:
    for q in probes[:warmup]:
        search(q[None, :])
    times = []
    deadline = time.perf_counter() + budget_s
    for q in probes:
        start = time.perf_counter()
        search(q[None, :])
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline and len(times) >= 50:
            break
    ms = 1000 * np.array(times)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(ms)


def score_row(row: Row, search, probes: np.ndarray, mate_ids: np.ndarray, exact_top1: np.ndarray | None,
              latency_s: float, batch_repeat: int = 2) -> np.ndarray:
    """Fill latency, throughput and accuracy of ``row``; returns the batched top-k ids."""
    row.p50_ms, row.p99_ms, row.latency_queries = time_single(search, probes, latency_s)
    threads = faiss.omp_get_max_threads()
    if threads > 1:
        faiss.omp_set_num_threads(1)
        try:
            row.p50_1t_ms, row.p99_1t_ms, _ = time_single(search, probes, latency_s / 2)
        finally:
            faiss.omp_set_num_threads(threads)
    best = np.inf
    for _ in range(batch_repeat):  # best of n: the machine is shared
        start = time.perf_counter()
        ids = search(probes)
        best = min(best, time.perf_counter() - start)
    row.batch_qps = len(probes) / best
    row.hit1 = float(np.mean(ids[:, 0] == mate_ids))
    in_top = (ids[:, :K] == mate_ids[:, None]).any(1)
    row.mate_in_top10 = float(np.mean(in_top))
    truth = ids[:, 0] if exact_top1 is None else exact_top1
    exact_first = truth == mate_ids
    misses = exact_first & ~in_top
    row.ann_miss, row.ann_miss_count = float(np.mean(misses)), int(misses.sum())
    return ids


def faiss_search(index):
    """Top-k ids from a raw faiss index."""
    return lambda q: index.search(q, K)[1]


def facesearch_search(index):
    """Top-k ids from a facesearch VectorIndex."""
    return lambda q: index.search(q, K).ids


def measured_build(build) -> tuple[object, float, int]:
    gc.collect()
    before = rss()
    start = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - start
    gc.collect()
    return index, seconds, rss() - before


def faiss_rows(gallery: np.ndarray, size: int, probes: np.ndarray, mate_ids: np.ndarray, args,
               workdir: Path, log, tails: dict) -> list[Row]:
    rows: list[Row] = []
    n = len(gallery)
    ids_range = np.arange(n)

    def facesearch_index(exact_limit: int, shortlist: int) -> FaissIndex:
        # float32 in RAM at every size, as measured in docs/index.md (fp16 on disk: sign_codes_10m.py)
        index = FaissIndex(workdir / f"fi-{exact_limit}", gallery.shape[1], exact_limit=exact_limit,
                           shortlist=shortlist, storage="ram")
        index.add(ids_range, gallery)
        return index

    # exact FaissIndex: the ground truth of every ANN row
    index, seconds, grown = measured_build(lambda: facesearch_index(n + 1, 256))
    row = Row("faiss", "exact (FaissIndex)", size, n, seconds, grown / n, index.describe()["bytes_per_face"])
    exact_ids = score_row(row, facesearch_search(index), probes, mate_ids, None, args.latency_seconds)
    exact_top1 = exact_ids[:, 0].copy()
    row.extra["mode"] = index.mode
    rows.append(row)
    log(row)
    del index, exact_ids
    gc.collect()

    index, seconds, grown = measured_build(lambda: facesearch_index(1, 256))
    for shortlist in args.shortlists:
        index.shortlist = shortlist
        row = Row("faiss", f"binary-rerank s={shortlist} (FaissIndex)", size, n, seconds, grown / n,
                  index.describe()["bytes_per_face"], extra={"mode": index.mode})
        score_row(row, facesearch_search(index), probes, mate_ids, exact_top1, args.latency_seconds)
        rows.append(row)
        log(row)
    diagnosis = mate_code_ranks(index, gallery, probes, mate_ids)
    if diagnosis is not None:
        d_mate, ranks = diagnosis
        keep = exact_top1 == mate_ids
        r = ranks[keep]
        codes = {"probes": int(keep.sum()), "p50": float(np.percentile(r, 50)), "p90": float(np.percentile(r, 90)),
                 "p99": float(np.percentile(r, 99)), "max": float(r.max()),
                 "measured": {str(s): float(np.mean(r > s)) for s in args.shortlists}}
        if tails:
            m_eff = effective_bits(index._sign_codes, gallery.shape[1], 512)
            codes["effective_bits"] = m_eff
            codes["predicted"] = predicted_code_misses(tails, d_mate, keep, n - 1, args.shortlists, m_eff)
        rows[-1].extra["mate_code_rank"] = codes
        for line in format_code_ranks(codes):
            log(None, line)
    del index
    gc.collect()

    if "hnsw" in args.raw:
        rows += hnsw_rows(gallery, size, probes, mate_ids, exact_top1, args, log)
    if "ivf" in args.raw:
        rows += ivf_rows(gallery, size, probes, mate_ids, exact_top1, args, log)
    return rows


def hnsw_rows(gallery: np.ndarray, size: int, probes: np.ndarray, mate_ids: np.ndarray, exact_top1: np.ndarray,
              args, log) -> list[Row]:
    """Raw FAISS HNSW32, built in chunks so an over-budget build can stop early."""
    rows: list[Row] = []
    n = len(gallery)

    def build_hnsw():
        index = faiss.IndexHNSWFlat(gallery.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        start = time.perf_counter()
        for lo in range(0, n, 50_000):
            index.add(gallery[lo:lo + 50_000])
            if time.perf_counter() - start > args.hnsw_max_seconds and lo + 50_000 < n:
                return None, f"build stopped: {lo + 50_000:,} of {n:,} added in {time.perf_counter() - start:.0f} s " \
                             f"(> --hnsw-max-seconds {args.hnsw_max_seconds:.0f})"
        return index, ""

    (index, note), seconds, grown = measured_build(build_hnsw)
    if index is None:
        row = Row("faiss", "hnsw32 efC40 (raw faiss)", size, n, seconds, note=note)
        rows.append(row)
        log(row)
    else:
        for ef in (128, 512):
            index.hnsw.efSearch = ef
            row = Row("faiss", f"hnsw32 efC40 ef={ef} (raw faiss)", size, n, seconds, grown / n,
                      gallery.shape[1] * 4 + 32 * 2 * 4 * 1.07)
            score_row(row, faiss_search(index), probes, mate_ids, exact_top1, args.latency_seconds)
            rows.append(row)
            log(row)
    del index
    gc.collect()
    return rows


def ivf_rows(gallery: np.ndarray, size: int, probes: np.ndarray, mate_ids: np.ndarray, exact_top1: np.ndarray,
             args, log) -> list[Row]:
    """Raw FAISS IVF-Flat (spherical k-means on a sample)."""
    rows: list[Row] = []
    n = len(gallery)
    nlist = args.ivf_nlist or int(2 ** round(np.log2(4 * np.sqrt(n))))

    def build_ivf():
        quantizer = faiss.IndexFlatIP(gallery.shape[1])
        index = faiss.IndexIVFFlat(quantizer, gallery.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        train = np.random.default_rng(3).choice(n, size=min(n, 25 * nlist), replace=False)
        index.train(gallery[np.sort(train)])
        for lo in range(0, n, 100_000):
            index.add(gallery[lo:lo + 100_000])
        return index

    index, seconds, grown = measured_build(build_ivf)
    for nprobe in (32, 128):
        index.nprobe = nprobe
        row = Row("faiss", f"ivf{nlist},Flat np={nprobe} (raw faiss)", size, n, seconds, grown / n,
                  gallery.shape[1] * 4 + 8)
        score_row(row, faiss_search(index), probes, mate_ids, exact_top1, args.latency_seconds)
        rows.append(row)
        log(row)
    del index
    gc.collect()
    return rows


def milvus_rows(p: Plant, model: Gaussian, args, workdir: Path, log) -> list[Row]:
    rows: list[Row] = []
    budget = args.milvus_max_seconds
    for size in args.milvus_sizes:
        gallery, mate_ids = build_gallery(p, model, size, args.seed)
        n = len(gallery)
        exact_top1 = faiss.knn(p.probes, gallery, 1, metric=faiss.METRIC_INNER_PRODUCT)[1][:, 0]
        directory = workdir / f"milvus-{size}"
        gc.collect()
        before = rss()
        start = time.perf_counter()
        index = open_index("milvus", directory=directory, collection_id=size, dim=gallery.shape[1],
                           index_type=args.milvus_index)
        note = ""
        for lo in range(0, n, 10_000):
            index.add(np.arange(lo, min(n, lo + 10_000)), gallery[lo:lo + 10_000])
            if time.perf_counter() - start > budget and lo + 10_000 < n:
                note = f"build stopped: {lo + 10_000:,} of {n:,} added in {time.perf_counter() - start:.0f} s"
                break
        if not note:
            index.save()
        seconds = time.perf_counter() - start
        grown = rss() - before
        row = Row("milvus", f"milvus-lite {args.milvus_index} N={size:,} (open_index)", size, n, seconds, grown / n,
                  note=note)
        if not note:
            disk = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
            row.bytes_per_face_nominal = disk / n
            row.extra["disk_bytes_per_face"] = disk / n
            score_row(row, facesearch_search(index), p.probes, mate_ids, exact_top1, args.latency_seconds)
        rows.append(row)
        log(row)
        index.drop()
        del index, gallery
        shutil.rmtree(directory, ignore_errors=True)
        gc.collect()
        if note or seconds > budget:
            break
        following = [s for s in args.milvus_sizes if s > size]
        if following and seconds * following[0] / size > budget:
            row.extra["next_size_skipped"] = (f"{following[0]:,} not tried: {seconds:.0f} s for {size:,} projects "
                                              f"{seconds * following[0] / size:.0f} s > {budget:.0f} s")
            log(None, row.extra["next_size_skipped"])
            break
    return rows


# -- report ------------------------------------------------------------------------------------------


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


HEADER = (f"{'setting':<40}{'build s':>9}{'B/face':>8}{'(nom.)':>8}{'p50 ms':>9}{'p99 ms':>9}{'(n)':>6}"
          f"{'p50 1T':>8}{'p99 1T':>8}{'batch q/s':>11}{'hit@1':>8}{'top10':>8}{'ANN miss':>10}")


def format_row(r: Row) -> str:
    line = (f"{r.setting:<40}{_fmt(r.build_s, '9.1f')}{_fmt(r.bytes_per_face_rss, '8.0f'):>8}"
            f"{_fmt(r.bytes_per_face_nominal, '8.0f'):>8}{_fmt(r.p50_ms, '9.2f'):>9}{_fmt(r.p99_ms, '9.2f'):>9}"
            f"{r.latency_queries or '-':>6}{_fmt(r.p50_1t_ms, '8.2f'):>8}{_fmt(r.p99_1t_ms, '8.2f'):>8}"
            f"{_fmt(r.batch_qps, '11.0f'):>11}{_fmt(r.hit1, '8.4f'):>8}"
            f"{_fmt(r.mate_in_top10, '8.4f'):>8}")
    if r.ann_miss is not None:
        line += f"{100 * r.ann_miss:>7.2f} % ({r.ann_miss_count})"
    if r.note:
        line += f"  [{r.note}]"
    return line


def format_check(check: dict) -> str:
    lines = [f"{'cosine to the probes / between people':<52}{'pairs':>12}{'mean':>8}{'std':>8}{'p99':>7}"
             f"{'p99.9':>7}{'p99.99':>7}{'max':>7}{'>=0.25':>10}{'>=0.30':>10}{'probe max':>10}{'(of)':>7}"]
    for name, s in check.items():
        lines.append(f"{name:<52}{s['pairs']:>12,}{s['mean']:>8.4f}{s['std']:>8.4f}{s['p99']:>7.3f}{s['p99.9']:>7.3f}"
                     f"{s['p99.99']:>7.3f}{s['max']:>7.3f}{s['rate_ge_0.25']:>10.2e}{s['rate_ge_0.30']:>10.2e}"
                     f"{_fmt(s.get('probe_max'), '10.3f'):>10}{s.get('probe_max_over', '-'):>7}")
    lines.append("(probe max = mean over probes of the highest impostor cosine among (of) faces; >=x = share of "
                 "pairs scoring at least x)")
    return "\n".join(lines)


def format_code_ranks(codes: dict) -> list[str]:
    shortlists = list(codes["measured"])
    head = "".join(f"{'> ' + s:>9}" for s in shortlists)
    lines = [f"binary codes: the mate's Hamming rank among all codes (ties split), {codes['probes']} probes whose "
             f"exact top-1 is the mate: p50 {codes['p50']:.0f}, p90 {codes['p90']:.0f}, p99 {codes['p99']:.0f}, "
             f"max {codes['max']:.0f}",
             f"  {'share of those probes with mate rank (= ANN miss)':<52}{head}",
             f"  {'measured':<52}" + "".join(f"{100 * v:>8.2f}%" for v in codes["measured"].values())]
    if "effective_bits" in codes:
        lines.append(f"  predicted from a tail of impostor cosines, Hamming ~ 512/m Binomial(m, angle/pi), m = "
                     f"{codes['effective_bits']:.0f} (measured on this rotation):")
    for name, shares in codes.get("predicted", {}).items():
        lines.append(f"  {'predicted, ' + name:<52}" + "".join(f"{100 * v:>8.2f}%" for v in shares.values()))
    return lines


def verdicts(rows: list[Row]) -> list[str]:
    """Does a FaissIndex binary-rerank row meet p50 <= 10 ms with ANN misses <= 1 %? (default threads, 1 thread)"""
    out = []
    for size in sorted({r.size for r in rows if r.backend == "faiss"}):
        at = [r for r in rows if r.size == size and r.backend == "faiss"]
        exact = next((r for r in at if r.setting.startswith("exact")), None)
        for label, field_name in (("default faiss threads", "p50_ms"), ("1 faiss thread", "p50_1t_ms")):
            binary = [r for r in at if r.setting.startswith("binary") and getattr(r, field_name) is not None]
            if not binary:
                continue

            def p50(r: Row, name: str = field_name) -> float:
                return getattr(r, name)

            ok = [r for r in binary if p50(r) <= TARGET_P50_MS and r.ann_miss <= TARGET_MISS]
            best = min(binary, key=lambda r: max(p50(r) / TARGET_P50_MS, r.ann_miss / TARGET_MISS))
            words = (f"N={size:,}, {label}: target p50 <= {TARGET_P50_MS:g} ms with ANN misses <= "
                     f"{100 * TARGET_MISS:g} %: "
                     + (f"met by {', '.join(r.setting.split(' (')[0] for r in ok)}" if ok else
                        f"MISSED; closest {best.setting.split(' (')[0]}: p50 {p50(best):.1f} ms, misses "
                        f"{100 * best.ann_miss:.2f} %"))
            if exact is not None and getattr(exact, field_name) is not None:
                words += f" (exact scan p50 {getattr(exact, field_name):.1f} ms, {exact.batch_qps:.0f} q/s batched)"
            out.append(words)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder with images/NAME/*.jpg")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"embedding cache (default {DEFAULT_CACHE})")
    parser.add_argument("--pack", default=DEFAULT_PACK)
    parser.add_argument("--sizes", default="100000,1000000", help="distractor counts for the faiss settings")
    parser.add_argument("--queries", type=int, default=1000, help="probes (real LFW photos)")
    parser.add_argument("--backends", default="faiss", help="faiss, milvus or faiss,milvus")
    parser.add_argument("--shortlists", default="64,128,256,512", help="FaissIndex binary-rerank shortlists")
    parser.add_argument("--raw", default="hnsw,ivf", help="raw FAISS comparison rows: hnsw, ivf, both or none")
    parser.add_argument("--hnsw-max-seconds", type=float, default=1200.0, help="give up an HNSW build after this")
    parser.add_argument("--ivf-nlist", type=int, default=0, help="IVF lists (default: power of 2 near 4 sqrt(N))")
    parser.add_argument("--latency-seconds", type=float, default=60.0,
                        help="time budget of the one-query-at-a-time loop per row (>= 50 queries)")
    parser.add_argument("--milvus-sizes", default="10000,50000,100000,200000,500000,1000000,2000000")
    parser.add_argument("--milvus-max-seconds", type=float, default=600.0, help="largest acceptable milvus build")
    parser.add_argument("--milvus-index", default="FLAT", help="milvus index_type (default FLAT, as facesearch)")
    parser.add_argument("--fit-on", choices=("singles", "all"), default="singles",
                        help="fit the distractor Gaussian on the people never planted (default: the single-photo "
                             "people, so the probes' identities do not leak into it) or on all people")
    parser.add_argument("--no-check", action="store_true", help="skip the distractor-statistics check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.shortlists = [int(s) for s in args.shortlists.split(",") if s]
    args.milvus_sizes = [int(s) for s in args.milvus_sizes.split(",") if s]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    def log(row: Row | None, text: str = "") -> None:
        say(format_row(row) if row is not None else f"  {text}")

    paths, labels, embeddings, how = load_or_compute(args.lfw, args.cache, args.pack, progress=True)
    p = plant(paths, labels, embeddings, how, args.queries, args.seed)
    fit = (how != "none") & (np.ones(len(labels), bool) if args.fit_on == "all" else ~np.isin(labels, p.names))
    model = Gaussian.fit(embeddings[fit], labels[fit])
    report: dict = {"pack": args.pack, "people_with_mates": p.people, "distractor_fit": args.fit_on,
                    "distractor_fit_faces": int(fit.sum()), "queries": len(p.probes),
                    "faiss_threads": faiss.omp_get_max_threads(), "cpu_count": os.cpu_count(),
                    "load_avg_start": os.getloadavg(), "rows": []}
    say(f"{len(paths):,} LFW images; {p.people:,} planted mates (first photo of each 2+ person); "
        f"{len(p.probes):,} probes; distractor Gaussian fitted on {int(fit.sum()):,} faces ({args.fit_on}); "
        f"faiss threads {faiss.omp_get_max_threads()}; "
        f"load average {os.getloadavg()[0]:.1f}")
    tails: dict = {}
    if not args.no_check:
        check, tails = impostor_check(embeddings, labels, p.probes, p.probe_labels, model, args.seed)
        report["distractor_check"] = check
        say("\nDistractor model check\n" + format_check(check))

    rows: list[Row] = []
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="search_scale_"))
    try:
        if "faiss" in backends:
            for size in args.sizes:
                gallery, mate_ids = build_gallery(p, model, size, args.seed)
                say(f"\nN = {size:,} distractors + {len(p.mates):,} mates = {len(gallery):,} faces, "
                    f"{len(p.probes):,} probes, k = {K}; load average {os.getloadavg()[0]:.1f}\n{HEADER}")
                rows += faiss_rows(gallery, size, p.probes, mate_ids, args, workdir, log, tails)
                del gallery
                gc.collect()
        if "milvus" in backends:
            say(f"\nmilvus-lite through open_index, sizes {args.milvus_sizes} until a build exceeds "
                f"{args.milvus_max_seconds:.0f} s\n{HEADER}")
            rows += milvus_rows(p, model, args, workdir, log)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report["rows"] = [asdict(r) for r in rows]
    report["verdicts"] = verdicts(rows)
    report["load_avg_end"] = os.getloadavg()
    say("")
    for line in report["verdicts"]:
        say(line)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
