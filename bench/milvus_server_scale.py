r"""1:N search on a real Milvus standalone server, side by side with FAISS, on the planted LFW benchmark.

The gallery, probes and distractors are exactly those of ``bench/search_scale.py`` (real LFW mates
among Gaussian distractors fitted on held-out people; real LFW photos as probes; ANN-induced miss =
the exact search ranks the true mate first but the index does not return it in its top 10). This
script adds the Milvus server rows (``search_scale.py`` is past the project's 500-line limit):

- ``milvus BIN_RERANK s=S``: ``MilvusIndex(index_type="BIN_RERANK")``: 512-bit sign codes in a
  ``BINARY_VECTOR`` field (``BIN_FLAT``, Hamming) give a shortlist of S, re-ranked exactly against the
  fp16 embeddings returned with it;
- ``milvus BIN_IVF nlist=L np=P``: ``MilvusIndex(index_type="BIN_IVF_RERANK")``: the same codes
  indexed ``BIN_IVF_FLAT``: the shortlist comes from P of L Hamming clusters;
- ``milvus IVF_SQ8 nlist=L np=P`` and ``milvus HNSW M=32 efC=200 ef=E``: Milvus's own ANN indexes;
- ``faiss exact`` (the ground truth) and ``faiss binary-rerank s=256`` (the embedded default).

Per row: build seconds (insert + flush + index + load), memory per face (the server binary's RSS
growth, or the client process's for FAISS), single-query p50/p99 (one query at a time; client and
server share this machine's cores), batched queries/s (all probes in one call, best of 2),
hit@1 and ANN-induced misses; the JSON (``--json``) also has the load average before, during
(each row) and after the run. The server is started from ``--venv`` (see
``facesearch.index.milvus_standalone``) unless ``--uri`` names one.

All four Milvus kinds at 100k and 1M in one run (hours at 1M: the IVF_SQ8 and HNSW builds; run it on
a quiet machine, from bench/):

    FACESEARCH_RUNTIME=onnxruntime nice -n 10 ../.venv/bin/python milvus_server_scale.py \
        --lfw ../../shared/data/lfw --sizes 100000,1000000 --queries 300 --latency-seconds 8 \
        --kinds BIN_RERANK,BIN_IVF,IVF_SQ8,HNSW --shortlists 256 --bin-nprobes 256,1024 \
        --nprobes 128,512 --efs 256,1024 --venv ../build/milvus-venv --json ../docs/bench/milvus_server_all.json

A quick check that it works (10k, a minute or two):

    nice -n 10 ../.venv/bin/python milvus_server_scale.py --lfw ../../shared/data/lfw --sizes 10000 \
        --queries 100 --latency-seconds 2 --kinds BIN_RERANK,BIN_IVF --venv ../build/milvus-venv
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


#: --kinds name -> MilvusIndex index_type.
KINDS = {"BIN_RERANK": "BIN_RERANK", "BIN_IVF": "BIN_IVF_RERANK", "IVF_SQ8": "IVF_SQ8", "HNSW": "HNSW"}


def default_nlist(n: int) -> int:
    return int(2 ** round(np.log2(4 * np.sqrt(n))))


def milvus_settings(kind: str, n: int, args) -> list[tuple[str, dict, list[tuple[str, dict, int]]]]:
    """(label, index_params, [(row label, search_params, shortlist)]) of one index kind."""
    if kind == "BIN_RERANK":
        return [("BIN_RERANK", {}, [(f"s={s}", {}, s) for s in args.shortlists])]
    if kind == "BIN_IVF":
        nlist = args.bin_nlist or default_nlist(n)
        return [(f"BIN_IVF nlist={nlist}", {"nlist": nlist},
                 [(f"np={p} s={s}", {"nprobe": p}, s) for p in args.bin_nprobes if p <= nlist
                  for s in args.shortlists])]
    if kind == "IVF_SQ8":
        nlist = args.nlist or default_nlist(n)
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
            index = MilvusIndex(uri, name, gallery.shape[1], index_type=KINDS[kind], index_params=index_params,
                                timeout=60)
            if len(index):
                index.drop()
                index = MilvusIndex(uri, name, gallery.shape[1], index_type=KINDS[kind],
                                    index_params=index_params, timeout=60)
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
                row.extra["load_avg"] = os.getloadavg()
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
    exact.extra["load_avg"] = os.getloadavg()
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
    row.extra["load_avg"] = os.getloadavg()
    rows.append(row)
    log(row)
    del index
    gc.collect()
    return rows, exact_top1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True, help="the LFW folder (mates and probes)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="LFW embedding cache")
    parser.add_argument("--pack", default=DEFAULT_PACK, help="model pack of the embeddings")
    parser.add_argument("--sizes", default="100000", help="distractor counts, comma-separated: 100000,1000000")
    parser.add_argument("--queries", type=int, default=500, help="probes (real LFW photos of planted people)")
    parser.add_argument("--kinds", default="BIN_RERANK,IVF_SQ8,HNSW",
                        help=f"Milvus index kinds, comma-separated, from {','.join(KINDS)}")
    parser.add_argument("--shortlists", default="128,256,512", help="BIN_RERANK / BIN_IVF shortlist sizes")
    parser.add_argument("--bin-nlist", type=int, default=0,
                        help="BIN_IVF clusters (default: power of 2 near 4 sqrt(N), e.g. 4096 at 1M)")
    parser.add_argument("--bin-nprobes", default="64,256",
                        help="BIN_IVF clusters scanned per query (at 10k: 1/4 of them lost 3 %% of mates)")
    parser.add_argument("--nlist", type=int, default=0, help="IVF_SQ8 lists (default: power of 2 near 4 sqrt(N))")
    parser.add_argument("--nprobes", default="64,256", help="IVF_SQ8 lists scanned per query")
    parser.add_argument("--efs", default="256,1024", help="HNSW ef at search time")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="single-query timing budget per row")
    parser.add_argument("--index-budget", type=float, default=1800.0, help="seconds to wait for an index build")
    parser.add_argument("--uri", default=None, help="an existing Milvus server (default: start one)")
    parser.add_argument("--venv", type=Path, default=Path("build/milvus-venv"),
                        help="the server's virtual environment (relative to the current folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None,
                        help="write the run (command, load averages, rows) as JSON here")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.kinds = [k.strip().upper() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown --kinds {','.join(unknown)} (choose from {','.join(KINDS)})")
    args.shortlists = [int(s) for s in args.shortlists.split(",")]
    args.bin_nprobes = [int(s) for s in args.bin_nprobes.split(",")]
    args.nprobes = [int(s) for s in args.nprobes.split(",")]
    args.efs = [int(s) for s in args.efs.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict = {"command": " ".join(sys.argv if argv is None else ["milvus_server_scale.py", *argv]),
                    "cpu_count": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
                    "load_avg_start": os.getloadavg()}

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
          f"{faiss.omp_get_max_threads()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows: list[Row] = []
    try:
        for size in args.sizes:
            gallery, mate_ids = build_gallery(p, model, size, args.seed)
            print(f"\nN = {size:,} distractors + {len(p.mates):,} mates = {len(gallery):,} faces; load average "
                  f"{os.getloadavg()[0]:.1f}\n{HEADER}", flush=True)
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
    report |= {"load_avg_end": os.getloadavg(), "rows": [asdict(r) for r in rows]}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
