"""10M faces on one machine: FAISS sign codes in RAM, re-rank vectors memory-mapped from disk as fp16.

The FAISS backend's design (``FaissIndex`` binary-rerank: the same fixed random rotation, 512-bit sign
codes in a ``faiss.IndexBinaryFlat``, exact re-ranking of a Hamming shortlist), with the float
vectors moved out of RAM: they are written once as fp16 rows to a file and read back through
``np.memmap`` for the shortlist only. RAM = 64 B of code + 8 B of id per face; disk = 1 KB per face.

The gallery is the planted benchmark of ``bench/search_scale.py`` streamed in chunks (it never exists
as a whole): the real LFW mates (first photo of each person with 2+ photos) at seeded random
positions among N Gaussian distractors fitted on held-out LFW people; the probes are other real
LFW photos of the planted people. The exact top-1 of every probe is accumulated chunk by chunk
(fp32), so "ANN-induced miss" means the same as there: the exact search ranks the true mate first
but the index does not return it in its top 10.

Reported: build seconds (generation excluded and included), peak and final RSS, single-query p50/p99
(warm page cache and after ``posix_fadvise(DONTNEED)`` dropped the file from it), batched
queries/s, hit@1, ANN misses.

    FACESEARCH_RUNTIME=onnxruntime nice -n 10 python bench/sign_codes_10m.py --lfw ../shared/data/lfw \
        --size 10000000 --workdir /tmp/codes10m
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from facesearch.eval.synthetic import GaussianFaces
from facesearch.index.faiss_index import _random_rotation
from lfw_embeddings import DEFAULT_CACHE, DEFAULT_PACK, load_or_compute
from search_scale import plant, rss

K = 10
CHUNK = 200_000


class MappedSignCodes:
    """Sign codes in RAM + fp16 rows on disk (memory-mapped) for the exact re-rank."""

    def __init__(self, dim: int, path: Path) -> None:
        self.dim, self.path = dim, path
        self.rotation = _random_rotation(dim)
        self.codes = faiss.IndexBinaryFlat(dim)
        self._file = open(path, "wb")  # noqa: SIM115 - closed in finish()
        self.rows: np.memmap | None = None

    def add(self, vectors: np.ndarray) -> None:
        self.codes.add(np.packbits(vectors @ self.rotation > 0, axis=1))
        self._file.write(vectors.astype(np.float16).tobytes())

    def finish(self) -> None:
        self._file.close()
        self.rows = np.memmap(self.path, np.float16, "r", shape=(self.codes.ntotal, self.dim))

    def search(self, queries: np.ndarray, shortlist: int) -> np.ndarray:
        _, positions = self.codes.search(np.packbits(queries @ self.rotation > 0, axis=1), shortlist)
        out = np.empty((len(queries), K), np.int64)
        for q in range(len(queries)):
            pos = np.sort(positions[q])  # file order: fewer, more sequential page reads
            scores = self.rows[pos].astype(np.float32) @ queries[q]
            out[q] = pos[np.argsort(-scores)[:K]]
        return out


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def latency(index: MappedSignCodes, probes: np.ndarray, shortlist: int, limit: int) -> tuple[float, float, int]:
    times = []
    for q in probes[:limit]:
        start = time.perf_counter()
        index.search(q[None, :], shortlist)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), len(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--pack", default=DEFAULT_PACK)
    parser.add_argument("--size", type=int, default=10_000_000, help="distractors")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--shortlists", default="256,512,1024")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--workdir", type=Path, required=True, help="where the fp16 file goes (1 KB per face)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    shortlists = [int(s) for s in args.shortlists.split(",")]
    faiss.omp_set_num_threads(1)  # one thread: a shared 2-core machine (see search_scale.py)

    paths, labels, embeddings, how = load_or_compute(args.lfw, args.cache, args.pack, progress=True)
    p = plant(paths, labels, embeddings, how, args.queries, args.seed)
    fit = (how != "none") & ~np.isin(labels, p.names)
    model = GaussianFaces.fit(embeddings[fit], labels[fit])
    total = args.size + len(p.mates)
    mate_pos = np.sort(np.random.default_rng([args.seed, 7]).choice(total, len(p.mates), replace=False))
    person_at = dict(zip(mate_pos.tolist(), range(len(p.mates))))
    mate_ids = mate_pos[p.probe_person]  # mate j sits at mate_pos[j]
    dim = p.mates.shape[1]
    args.workdir.mkdir(parents=True, exist_ok=True)
    index = MappedSignCodes(dim, args.workdir / "vectors.f16")
    best_score = np.full(len(p.probes), -np.inf, np.float32)
    best_id = np.full(len(p.probes), -1, np.int64)
    rss_start = rss()
    start = time.perf_counter()
    index_seconds = 0.0
    made = 0
    for lo in range(0, total, CHUNK):
        hi = min(total, lo + CHUNK)
        chunk = np.empty((hi - lo, dim), np.float32)
        mates_here = [pos for pos in range(lo, hi) if pos in person_at] if hi - lo else []
        distractor_rows = np.setdiff1d(np.arange(hi - lo), np.array(mates_here, np.int64) - lo)
        model.sample_into(chunk, distractor_rows, len(distractor_rows), args.seed * 100_003 + lo // CHUNK)
        for pos in mates_here:
            chunk[pos - lo] = p.mates[person_at[pos]]
        made += len(distractor_rows)
        t = time.perf_counter()
        index.add(chunk)
        index_seconds += time.perf_counter() - t
        sims = p.probes @ chunk.T  # exact ground truth, accumulated
        top = sims.argmax(1)
        better = sims[np.arange(len(top)), top] > best_score
        best_score[better] = sims[np.arange(len(top)), top][better]
        best_id[better] = lo + top[better]
        if (lo // CHUNK) % 10 == 0:
            print(f"  {hi:,} / {total:,} faces, {time.perf_counter() - start:.0f} s, RSS {rss() / 2**30:.2f} GiB",
                  flush=True)
    t = time.perf_counter()
    index.finish()
    index_seconds += time.perf_counter() - t
    build_total = time.perf_counter() - start
    report = {"faces": total, "distractors": made, "mates": len(p.mates), "probes": len(p.probes),
              "build_s_total_with_generation_and_ground_truth": build_total, "build_s_index_only": index_seconds,
              "rss_gib_after_build": rss() / 2**30, "rss_growth_gib": (rss() - rss_start) / 2**30,
              "disk_gib": index.path.stat().st_size / 2**30, "exact_top1_is_mate": float(np.mean(best_id == mate_ids)),
              "rows": []}
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}), flush=True)
    exact_first = best_id == mate_ids
    for s in shortlists:
        t = time.perf_counter()
        ids = index.search(p.probes, s)
        qps = len(p.probes) / (time.perf_counter() - t)
        in_top = (ids == mate_ids[:, None]).any(1)
        misses = exact_first & ~in_top
        warm = latency(index, p.probes, s, args.latency_queries)
        drop_page_cache(index.path)
        cold = latency(index, p.probes[::-1], s, min(50, args.latency_queries))
        row = {"shortlist": s, "batch_qps": qps, "hit1": float(np.mean(ids[:, 0] == mate_ids)),
               "ann_miss": float(np.mean(misses)), "ann_miss_count": int(misses.sum()),
               "p50_ms_warm": warm[0], "p99_ms_warm": warm[1], "n_warm": warm[2],
               "p50_ms_cold": cold[0], "p99_ms_cold": cold[1], "n_cold": cold[2]}
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {report['peak_rss_gib']:.2f} GiB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    index.path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
