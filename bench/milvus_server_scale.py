"""1:N search on a real Milvus standalone server, side by side with FAISS, on the planted LFW benchmark.

The gallery, probes and distractors are exactly those of ``bench/search_scale.py`` (real LFW mates
among Gaussian distractors fitted on held-out people; real LFW photos as probes; ANN-induced miss =
the exact search ranks the true mate first but the index does not return it in its top 10). This
script adds the Milvus server rows (``search_scale.py`` is past the project's 500-line limit):

- ``milvus BIN_RERANK s=S``: ``MilvusIndex(index_type="BIN_RERANK")``: 512-bit sign codes in a
  ``BINARY_VECTOR`` field (``BIN_FLAT``, Hamming) give a shortlist of S, re-ranked exactly against the
  fp16 embeddings returned with it;
- ``milvus IVF_SQ8 nlist=L np=P`` and ``milvus HNSW M=32 efC=200 ef=E``: Milvus's own ANN indexes;
- ``faiss exact`` (the ground truth) and ``faiss binary-rerank s=256`` (the embedded default).

Per row: build seconds (insert + flush + index + load), memory per face (the server binary's RSS
growth, or the client process's for FAISS), single-query p50/p99 (one query at a time; client and
server share this machine's cores), batched queries/s (all probes in one call, best of 2),
hit@1 and ANN-induced misses. The server is started from ``build/milvus-venv`` (see
``facesearch.index.milvus_standalone``) unless ``--uri`` names one.

    nice -n 10 python bench/milvus_server_scale.py --lfw ../shared/data/lfw --sizes 100000
    nice -n 10 python bench/milvus_server_scale.py --lfw ../shared/data/lfw --sizes 1000000 \
        --kinds BIN_RERANK,IVF_SQ8
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np

from facesearch.eval.synthetic import GaussianFaces
from facesearch.index import FaissIndex
from facesearch.index.milvus_index import MilvusIndex
from facesearch.index.milvus_standalone import MilvusServer
from lfw_embeddings import DEFAULT_CACHE, DEFAULT_PACK, load_or_compute
from search_scale import HEADER, Row, build_gallery, facesearch_search, format_row, measured_build, plant, score_row


def process_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def milvus_settings(kind: str, n: int, args) -> list[tuple[str, dict, list[tuple[str, dict, int]]]]:
    """(label, index_params, [(row label, search_params, shortlist)]) of one index kind."""
    if kind == "BIN_RERANK":
        return [("BIN_RERANK", {}, [(f"s={s}", {}, s) for s in args.shortlists])]
    if kind == "IVF_SQ8":
        nlist = args.nlist or int(2 ** round(np.log2(4 * np.sqrt(n))))
        return [(f"IVF_SQ8 nlist={nlist}", {"nlist": nlist},
                 [(f"np={p}", {"nprobe": p}, 0) for p in args.nprobes if p <= nlist])]
    if kind == "HNSW":
        return [("HNSW M=32 efC=200", {"M": 32, "efConstruction": 200},
                 [(f"ef={e}", {"ef": e}, 0) for e in args.efs])]
    raise ValueError(kind)


def wait_indexed(index: MilvusIndex, n: int, budget: float) -> None:
    """Flush, then wait until the server's index covers every row (IVF/HNSW build after the flush)."""
    index.save()
    deadline = time.monotonic() + budget
    for name in index.client.list_indexes(index.name):
        while time.monotonic() < deadline:
            info = index.client.describe_index(index.name, name)
            if int(info.get("pending_index_rows", 0)) == 0 and int(info.get("indexed_rows", n)) >= n:
                break
            time.sleep(1)
    index.client.release_collection(index.name)
    index.client.load_collection(index.name)


def milvus_rows(server_pid: int | None, uri: str, gallery: np.ndarray, size: int, probes: np.ndarray,
                mate_ids: np.ndarray, exact_top1: np.ndarray, args, log) -> list[Row]:
    rows: list[Row] = []
    n = len(gallery)
    for kind in args.kinds:
        for label, index_params, searches in milvus_settings(kind, n, args):
            name = f"bench_{kind.lower()}_{size}"
            before = process_rss(server_pid) if server_pid else 0
            start = time.perf_counter()
            index = MilvusIndex(uri, name, gallery.shape[1], index_type=kind, index_params=index_params,
                                timeout=60)
            if len(index):
                index.drop()
                index = MilvusIndex(uri, name, gallery.shape[1], index_type=kind, index_params=index_params,
                                    timeout=60)
            ids = np.arange(n, dtype=np.int64)
            for lo in range(0, n, 50_000):
                index.add(ids[lo:lo + 50_000], gallery[lo:lo + 50_000])
            inserted = time.perf_counter() - start
            wait_indexed(index, n, args.index_budget)
            seconds = time.perf_counter() - start
            grown = (process_rss(server_pid) - before) if server_pid else None
            for row_label, search_params, shortlist in searches:
                index.search_params = search_params
                if shortlist:
                    index.shortlist = shortlist
                row = Row("milvus-server", f"milvus {label} {row_label}", size, n, seconds,
                          grown / n if grown is not None else None,
                          extra={"insert_s": inserted, "index_params": index_params, "search_params": search_params})
                score_row(row, facesearch_search(index), probes, mate_ids, exact_top1, args.latency_seconds)
                rows.append(row)
                log(row)
            index.drop()
            index.close()
            del index
            gc.collect()
    return rows


def faiss_rows(gallery: np.ndarray, size: int, probes: np.ndarray, mate_ids: np.ndarray, workdir: Path,
               args, log) -> tuple[list[Row], np.ndarray]:
    """The exact ground truth (faiss.knn, no copy) and FaissIndex binary-rerank s=256."""
    n = len(gallery)
    rows = []
    exact = Row("faiss", "faiss exact (knn, ground truth)", size, n, 0.0, 0.0, gallery.shape[1] * 4)

    def exact_search(q):
        return faiss.knn(q, gallery, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]

    exact_ids = score_row(exact, exact_search, probes, mate_ids, None, args.latency_seconds / 2)
    exact_top1 = exact_ids[:, 0].copy()
    rows.append(exact)
    log(exact)

    def build() -> FaissIndex:
        index = FaissIndex(workdir / f"faiss-{size}", gallery.shape[1], exact_limit=1, shortlist=256,
                           storage="ram")  # float32 in RAM, as in docs/scale.md's side-by-side table
        index.add(np.arange(n), gallery)
        return index

    index, seconds, grown = measured_build(build)
    row = Row("faiss", "faiss binary-rerank s=256 (FaissIndex)", size, n, seconds, grown / n,
              index.describe()["bytes_per_face"])
    score_row(row, facesearch_search(index), probes, mate_ids, exact_top1, args.latency_seconds)
    rows.append(row)
    log(row)
    del index
    gc.collect()
    return rows, exact_top1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--pack", default=DEFAULT_PACK)
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--kinds", default="BIN_RERANK,IVF_SQ8,HNSW")
    parser.add_argument("--shortlists", default="128,256,512")
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (default: power of 2 near 4 sqrt(N))")
    parser.add_argument("--nprobes", default="64,256")
    parser.add_argument("--efs", default="256,1024")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--index-budget", type=float, default=1800.0, help="seconds to wait for an index build")
    parser.add_argument("--uri", default=None, help="an existing Milvus server (default: start one)")
    parser.add_argument("--venv", type=Path, default=Path("build/milvus-venv"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.shortlists = [int(s) for s in args.shortlists.split(",")]
    args.nprobes = [int(s) for s in args.nprobes.split(",")]
    args.efs = [int(s) for s in args.efs.split(",")]

    def log(row: Row) -> None:
        print(format_row(row), flush=True)

    paths, labels, embeddings, how = load_or_compute(args.lfw, args.cache, args.pack, progress=True)
    p = plant(paths, labels, embeddings, how, args.queries, args.seed)
    fit = (how != "none") & ~np.isin(labels, p.names)
    model = GaussianFaces.fit(embeddings[fit], labels[fit])
    workdir = Path(tempfile.mkdtemp(prefix="milvus_scale_"))
    server = None
    if args.uri is None:
        server = MilvusServer.start(args.venv, workdir / "server")  # --venv: relative to the current folder
    uri = args.uri or server.uri
    print(f"{p.people:,} planted mates, {len(p.probes):,} probes; Milvus server {uri}; faiss threads "
          f"{faiss.omp_get_max_threads()}", flush=True)
    rows: list[Row] = []
    try:
        for size in args.sizes:
            gallery, mate_ids = build_gallery(p, model, size, args.seed)
            print(f"\nN = {size:,} distractors + {len(p.mates):,} mates = {len(gallery):,} faces\n{HEADER}", flush=True)
            faiss_part, exact_top1 = faiss_rows(gallery, size, p.probes, mate_ids, workdir, args, log)
            rows += faiss_part
            rows += milvus_rows(server.binary_pid if server else None, uri, gallery, size, p.probes, mate_ids,
                                exact_top1, args, log)
            del gallery
            gc.collect()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the server's data: GBs per run
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
