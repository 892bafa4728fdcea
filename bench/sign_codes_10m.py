"""10M faces on one machine: the product's ``FaissIndex`` with ``storage="mmap"`` (sign codes in RAM,
re-rank vectors memory-mapped from disk as fp16).

The index is ``facesearch.index.FaissIndex`` itself (the storage ``auto`` picks from 1M faces):
512-bit sign codes of the fixed random rotation in a ``faiss.IndexBinaryFlat``, ids in RAM, the
fp16 rows appended to ``gen-G.rows.f16`` in ``--workdir`` and read through ``np.memmap`` for the
Hamming shortlist only. RAM = 64 B of code + 8 B of id + 16 B of id map per face; disk ~1.1 KB.

The gallery is the planted benchmark of ``bench/search_scale.py`` streamed in chunks (it never exists
as a whole): the real LFW mates (first photo of each person with 2+ photos) at seeded random
positions among N Gaussian distractors fitted on held-out LFW people; the probes are other real
LFW photos of the planted people. The exact top-1 of every probe is accumulated chunk by chunk
(fp32), so "ANN-induced miss" means the same as there: the exact search ranks the true mate first
but the index does not return it in its top 10.

Reported: build seconds (generation excluded and included), the time to open the saved index
again, single-query p50/p99 (warm page cache and after ``posix_fadvise(DONTNEED)`` dropped the
file from it), batched queries/s, hit@1, ANN misses, and memory split the way the kernel counts
it (``/proc/self/status``): ``RssAnon`` is the process's own memory (codes, ids, chunks being
generated); ``RssFile`` is pages of mapped files, almost all of it the fp16 file's page cache,
which the kernel drops under pressure. Peaks are the largest values sampled after every chunk and
every search phase; ``VmHWM`` (the kernel's peak of the two together) is reported beside them.

    FACESEARCH_RUNTIME=onnxruntime nice -n 10 python bench/sign_codes_10m.py --lfw ../shared/data/lfw \
        --size 10000000 --workdir /tmp/codes10m
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from facesearch.eval.synthetic import GaussianFaces
from facesearch.index import FaissIndex
from facesearch.index.faiss_storage import mapped_paths, read_current
from lfw_embeddings import DEFAULT_CACHE, DEFAULT_PACK, load_or_compute
from search_scale import plant

K = 10
CHUNK = 200_000
GIB = 2**30


class Memory:
    """``/proc/self/status`` figures in bytes, and the largest of each seen by :meth:`sample`."""

    FIELDS = ("RssAnon", "RssFile", "VmRSS", "VmHWM")

    def __init__(self) -> None:
        self.peak = dict.fromkeys(self.FIELDS, 0)

    @classmethod
    def now(cls) -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name in cls.FIELDS:
                    out[name] = int(value.split()[0]) * 1024
        return out

    def sample(self) -> dict[str, int]:
        now = self.now()
        for name, value in now.items():
            self.peak[name] = max(self.peak[name], value)
        return now


def gib(values: dict[str, int], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{name.lower()}_gib": round(value / GIB, 3) for name, value in values.items()}


def rows_file(index: FaissIndex) -> Path:
    return mapped_paths(index.directory, read_current(index.directory)["generation"])["rows"]


_FRESH = """
import json, sys, time
import numpy as np
from facesearch.index import FaissIndex
from facesearch.index.faiss_index import _random_rotation
sys.path.insert(0, sys.argv[4])
from sign_codes_10m import Memory
t = time.perf_counter()
_random_rotation(512)  # once per process (cached): timed apart from reading the index
rotation_s = time.perf_counter() - t
base = Memory.now()
t = time.perf_counter()
index = FaissIndex(sys.argv[1], storage="auto")
opened_s = time.perf_counter() - t
opened = Memory.now()
index.shortlist = int(sys.argv[3])
index.search(np.load(sys.argv[2]), 10)
searched = Memory.now()
print(json.dumps({"storage": index.storage_mode, "faces": len(index), "open_s": opened_s, "rotation_s": rotation_s,
                  "rss_anon_gib_before_open": base["RssAnon"] / 2**30,
                  "rss_anon_gib_after_open": opened["RssAnon"] / 2**30,
                  "index_anon_gib": (opened["RssAnon"] - base["RssAnon"]) / 2**30,
                  "rss_anon_gib_after_probes": searched["RssAnon"] / 2**30,
                  "rss_file_gib_after_probes": searched["RssFile"] / 2**30,
                  "vm_hwm_gib": searched["VmHWM"] / 2**30}))
"""


def fresh_process_open(directory: Path, probes: Path, shortlist: int) -> dict:
    """Open the saved index in a new Python process and search all probes once: its own memory."""
    done = subprocess.run([sys.executable, "-c", _FRESH, str(directory), str(probes), str(shortlist),
                           str(Path(__file__).parent)], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def latency(index: FaissIndex, probes: np.ndarray, limit: int) -> tuple[float, float, int]:
    times = []
    for q in probes[:limit]:
        start = time.perf_counter()
        index.search(q[None, :], K)
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
    parser.add_argument("--workdir", type=Path, required=True, help="where the index goes (~1.1 KB per face)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="leave the index in --workdir")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    shortlists = [int(s) for s in args.shortlists.split(",")]
    faiss.omp_set_num_threads(1)  # one thread: a shared 2-core machine (see search_scale.py)

    paths, labels, embeddings, how = load_or_compute(args.lfw, args.cache, args.pack, progress=True)
    p = plant(paths, labels, embeddings, how, args.queries, args.seed)
    fit = (how != "none") & ~np.isin(labels, p.names)
    model = GaussianFaces.fit(embeddings[fit], labels[fit])
    del paths, labels, embeddings, how
    total = args.size + len(p.mates)
    mate_pos = np.sort(np.random.default_rng([args.seed, 7]).choice(total, len(p.mates), replace=False))
    person_at = dict(zip(mate_pos.tolist(), range(len(p.mates))))
    mate_ids = mate_pos[p.probe_person]  # mate j sits at mate_pos[j]; face id = position
    dim = p.mates.shape[1]
    directory = args.workdir / "index"
    shutil.rmtree(directory, ignore_errors=True)
    index = FaissIndex(directory, dim, storage="mmap")
    best_score = np.full(len(p.probes), -np.inf, np.float32)
    best_id = np.full(len(p.probes), -1, np.int64)
    memory = Memory()
    gc.collect()
    before = memory.sample()
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
        index.add(np.arange(lo, hi, dtype=np.int64), chunk)  # rows past the pending limit go to disk
        index_seconds += time.perf_counter() - t
        sims = p.probes @ chunk.T  # exact ground truth, accumulated
        top = sims.argmax(1)
        better = sims[np.arange(len(top)), top] > best_score
        best_score[better] = sims[np.arange(len(top)), top][better]
        best_id[better] = lo + top[better]
        del chunk, sims
        now = memory.sample()
        if (lo // CHUNK) % 10 == 0:
            print(f"  {hi:,} / {total:,} faces, {time.perf_counter() - start:.0f} s, "
                  f"RssAnon {now['RssAnon'] / GIB:.2f} GiB, RssFile {now['RssFile'] / GIB:.2f} GiB", flush=True)
    t = time.perf_counter()
    index.save()
    index_seconds += time.perf_counter() - t
    build_total = time.perf_counter() - start
    gc.collect()
    after_build = memory.sample()
    assert index.storage_mode == "mmap" and len(index) == total
    path = rows_file(index)
    report = {"faces": total, "distractors": made, "mates": len(p.mates), "probes": len(p.probes),
              "index": "FaissIndex(storage='mmap')", "describe": index.describe(),
              "build_s_total_with_generation_and_ground_truth": build_total, "build_s_index_only": index_seconds,
              **gib(before, "before_build"), **gib(after_build, "after_build"),
              "index_anon_gib": round((after_build["RssAnon"] - before["RssAnon"]) / GIB, 3),
              "disk_gib": sum(f.stat().st_size for f in directory.iterdir()) / GIB,
              "exact_top1_is_mate": float(np.mean(best_id == mate_ids)), "rows": []}

    # What serving the index costs: a fresh process opens the saved index (codes and ids read into
    # RAM, rows mapped) and answers the probes; its memory is not muddied by the build's freed heap.
    np.save(args.workdir / "probes.npy", p.probes)
    report["fresh_process"] = fresh_process_open(directory, args.workdir / "probes.npy", shortlists[0])
    assert report["fresh_process"]["faces"] == total and report["fresh_process"]["storage"] == "mmap"
    (args.workdir / "probes.npy").unlink()
    del index
    gc.collect()
    index = FaissIndex(directory, dim)  # storage auto: the files are in the mmap format
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}), flush=True)
    exact_first = best_id == mate_ids
    for s in shortlists:
        index.shortlist = s
        t = time.perf_counter()
        ids = index.search(p.probes, K).ids
        qps = len(p.probes) / (time.perf_counter() - t)
        in_top = (ids == mate_ids[:, None]).any(1)
        misses = exact_first & ~in_top
        warm = latency(index, p.probes, args.latency_queries)
        warm_memory = memory.sample()
        drop_page_cache(path)
        cold = latency(index, p.probes[::-1], min(50, args.latency_queries))
        row = {"shortlist": s, "batch_qps": qps, "hit1": float(np.mean(ids[:, 0] == mate_ids)),
               "ann_miss": float(np.mean(misses)), "ann_miss_count": int(misses.sum()),
               "p50_ms_warm": warm[0], "p99_ms_warm": warm[1], "n_warm": warm[2],
               "p50_ms_cold": cold[0], "p99_ms_cold": cold[1], "n_cold": cold[2],
               **gib(warm_memory, "after_warm_queries")}
        memory.sample()
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
    report.update(gib(memory.peak, "peak_sampled"))
    print(f"peak RssAnon (own memory) {memory.peak['RssAnon'] / GIB:.2f} GiB, peak RssFile (mapped file pages) "
          f"{memory.peak['RssFile'] / GIB:.2f} GiB, VmHWM {memory.peak['VmHWM'] / GIB:.2f} GiB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
