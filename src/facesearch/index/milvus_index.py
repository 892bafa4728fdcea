"""Milvus backend through pymilvus: milvus-lite (a local file) on a laptop and in tests, a Milvus
server (standalone or cluster) by URI and token for collections that outgrow one machine.

One Milvus collection per facesearch collection; the primary key is the catalog face id.

Index kinds (``index_type``):
- ``FLAT``: exact inner-product scan (the default; exact at any size, slow past ~100k).
- ``BIN_RERANK``: the FAISS backend's design on the server: a 512-bit sign code of the randomly
  rotated embedding in a ``BINARY_VECTOR`` field (``BIN_FLAT``, Hamming) gives a shortlist, and
  the shortlist is re-ranked exactly against the embedding stored beside it (fp16, base64 in a
  VARCHAR: Milvus 2.3 allows one vector field per collection). Face embeddings of different
  people are nearly orthogonal, which makes graph and IVF indexes lose true mates; the sign-code
  shortlist keeps them (``docs/scale.md``).
- ``BIN_IVF_RERANK``: the same, but the codes are indexed ``BIN_IVF_FLAT`` (``index_params``
  ``{"nlist": L}``, default 1024; ``search_params`` ``{"nprobe": P}``, default 1/8 of the lists):
  a query scans only P of the L Hamming clusters, so the shortlist costs less at 1M+, at the price
  of missing mates whose code fell into an unscanned cluster (measure with
  ``bench/milvus_server_scale.py --kinds BIN_IVF``).
- ``IVF_SQ8`` / ``HNSW``: Milvus's own ANN indexes, tuned by ``index_params`` / ``search_params``.

Consistency: writes, counts and ``ids()`` are Strong. A search right after this client's own
write is Strong too (it waits for the server's time tick, up to 200 ms, until the write is
applied); other searches are ``Eventually`` (no wait: 200-400 ms less per query). Another
process's writes are seen because the engine reconciles when the catalog changed, and that
reconcile's Strong ``ids()`` query moves the query node's safe timestamp past them (on a
standalone server; with several query replicas only per replica).

Writes go in batches of whole rows with numpy vectors (no per-row Python lists: 10k rows stay
under the server's 64 MB message limit); counts come from the engine's ``count(*)``.
"""

from __future__ import annotations

import base64

import numpy as np

from facesearch.errors import IndexUnavailable
from facesearch.index.base import Hits, as_queries, empty_hits

_QUERY_PAGE = 10_000
_WRITE_BATCH = 10_000
_REPLY_BYTES = 24 << 20
_MAX_TOPK = 16_384
#: Lowest id a filter may name: the server refuses ``-9223372036854775808`` ("value out of range").
_MIN_ID = -(2**63) + 1
KINDS = ("FLAT", "BIN_RERANK", "BIN_IVF_RERANK", "IVF_SQ8", "HNSW")
#: Kinds whose shortlist comes from sign codes and is re-ranked here -> the codes' Milvus index.
CODE_INDEXES = {"BIN_RERANK": "BIN_FLAT", "BIN_IVF_RERANK": "BIN_IVF_FLAT"}
DEFAULT_SHORTLIST = 256
DEFAULT_BIN_NLIST = 1024


class MilvusUnavailable(IndexUnavailable):
    """The configured Milvus server cannot be reached (one line: where, and what to check)."""


class MilvusAuthFailed(IndexUnavailable):
    """The Milvus server runs but refuses this client's token, or got none (one line, no token)."""


class MilvusIndex:
    def __init__(self, uri: str, name: str, dim: int = 512, index_type: str = "FLAT",
                 token: str | None = None, index_params: dict | None = None,
                 search_params: dict | None = None, shortlist: int = DEFAULT_SHORTLIST,
                 timeout: float = 10.0, search_consistency: str = "Eventually") -> None:
        from facesearch.extras import require

        pymilvus = require("pymilvus", "milvus", "the Milvus index backend")
        if index_type not in KINDS:
            raise ValueError(f"unknown Milvus index type {index_type!r} (choose from {', '.join(KINDS)})")
        self.uri = uri
        self.name = name
        self.dim = dim
        self.shortlist = shortlist
        self.search_consistency = search_consistency
        self._unseen_writes = True  # the first search waits for whatever was written before it
        self.client = _connect(pymilvus, uri, token, timeout)
        if not self.client.has_collection(name):
            self._create(pymilvus.DataType, index_type, index_params or {})
        self.index_type, stored_params = self._stored_kind()
        self.search_params = dict(search_params or {})
        if self.index_type == "BIN_IVF_RERANK" and "nprobe" not in self.search_params:
            self.search_params["nprobe"] = max(1, int(stored_params.get("nlist", DEFAULT_BIN_NLIST)) // 8)
        self.client.load_collection(name)

    # -- schema --------------------------------------------------------------------------------------

    def _create(self, DataType, kind: str, index_params: dict) -> None:  # noqa: N803 - pymilvus's name
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        params = self.client.prepare_index_params()
        if kind in CODE_INDEXES:
            schema.add_field("code", DataType.BINARY_VECTOR, dim=self.dim)
            schema.add_field("emb", DataType.VARCHAR, max_length=_b64_len(self.dim * 2))
            if kind == "BIN_IVF_RERANK":
                index_params = {"nlist": DEFAULT_BIN_NLIST, **index_params}
            params.add_index(field_name="code", index_type=CODE_INDEXES[kind], metric_type="HAMMING",
                             params=index_params)
        else:
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
            params.add_index(field_name="vector", index_type=kind, metric_type="IP", params=index_params)
        self.client.create_collection(self.name, schema=schema, index_params=params, consistency_level="Strong")

    def _stored_kind(self) -> tuple[str, dict]:
        """What the existing collection holds, and its index's parameters (a reopened collection
        keeps its kind)."""
        fields = {f["name"] for f in self.client.describe_collection(self.name)["fields"]}
        indexes = self.client.list_indexes(self.name)
        described = self.client.describe_index(self.name, indexes[0]) if indexes else {}
        kind = str(described.get("index_type", "FLAT"))
        if "code" in fields:
            kind = "BIN_IVF_RERANK" if kind == "BIN_IVF_FLAT" else "BIN_RERANK"
        params = described.get("params", described)  # pymilvus versions differ in nesting
        return kind, params if isinstance(params, dict) else {}

    # -- state ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        rows = self.client.query(self.name, filter="", output_fields=["count(*)"])  # Strong
        self._unseen_writes = False
        return int(rows[0]["count(*)"])

    def ids(self) -> np.ndarray:
        found: list[int] = []
        condition = f"id >= {_MIN_ID}"
        while True:
            page = self.client.query(self.name, filter=condition, output_fields=["id"], limit=_QUERY_PAGE)
            page_ids = sorted(int(row["id"]) for row in page)
            found.extend(page_ids)
            if len(page) < _QUERY_PAGE:
                break
            condition = f"id > {page_ids[-1]}"  # the server returns pages in primary-key order
        self._unseen_writes = False  # a Strong read: later searches see everything before it
        return np.array(found, np.int64)

    def describe(self) -> dict:
        info = {"backend": "milvus", "uri": self.uri, "collection": self.name, "index_type": self.index_type,
                "faces": len(self)}
        if self.index_type in CODE_INDEXES:
            info["shortlist"] = self.shortlist
        if self.search_params:
            info["search_params"] = dict(self.search_params)
        return info

    # -- writes --------------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert the ids not already present (a catalog id is immutable: re-adding replaces nothing)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        vectors = as_queries(vectors, self.dim)
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        for lo in range(0, len(ids), _WRITE_BATCH):
            part_ids, part = ids[lo:lo + _WRITE_BATCH], vectors[lo:lo + _WRITE_BATCH]
            fresh = ~np.isin(part_ids, self._present(part_ids))
            part_ids, part = part_ids[fresh], part[fresh]
            _, first = np.unique(part_ids, return_index=True)  # an id twice in one call: once
            part_ids, part = part_ids[np.sort(first)], part[np.sort(first)]
            if len(part_ids):
                self.client.insert(self.name, self._rows(part_ids, part))
                self._unseen_writes = True

    def _rows(self, ids: np.ndarray, vectors: np.ndarray) -> list[dict]:
        if self.index_type in CODE_INDEXES:
            codes = sign_codes(vectors)
            halves = vectors.astype(np.float16)
            return [{"id": i, "code": codes[r].tobytes(), "emb": base64.b64encode(halves[r].tobytes()).decode()}
                    for r, i in enumerate(ids.tolist())]
        return [{"id": i, "vector": vectors[r]} for r, i in enumerate(ids.tolist())]

    def _present(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) == 0:
            return ids
        rows = self.client.query(self.name, filter=f"id in {ids.tolist()}", output_fields=["id"])
        return np.array([int(row["id"]) for row in rows], np.int64)

    def remove(self, ids) -> int:
        ids = np.unique(np.asarray(ids, np.int64).reshape(-1))
        removed = 0
        for lo in range(0, len(ids), _WRITE_BATCH):
            present = self._present(ids[lo:lo + _WRITE_BATCH])
            if len(present):
                self.client.delete(self.name, ids=present.tolist())
                self._unseen_writes = True
            removed += len(present)
        return removed

    # -- search --------------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> Hits:
        queries = as_queries(queries, self.dim)
        hits = empty_hits(len(queries), max(k, 0))
        if k <= 0:
            return hits
        if k > _MAX_TOPK:  # the server's limit; callers asking for "everything" get all there is
            k = min(k, max(len(self), 1))
            if k > _MAX_TOPK:
                raise ValueError(f"Milvus returns at most {_MAX_TOPK:,} hits per query (asked for {k:,})")
        consistency = "Strong" if self._unseen_writes else self.search_consistency
        self._unseen_writes = False
        if self.index_type in CODE_INDEXES:
            return self._search_codes(queries, k, hits, consistency)
        result = self.client.search(self.name, data=queries.tolist(), limit=k, output_fields=["id"],
                                    anns_field="vector", consistency_level=consistency,
                                    search_params={"metric_type": "IP", "params": self.search_params})
        for q, row in enumerate(result):
            for r, hit in enumerate(row[:k]):
                hits.ids[q, r] = int(hit["id"])
                hits.scores[q, r] = float(hit["distance"])
        return hits

    def _search_codes(self, queries: np.ndarray, k: int, hits: Hits, consistency: str) -> Hits:
        codes = sign_codes(queries)
        shortlist = min(max(self.shortlist, k), _MAX_TOPK)
        # Each hit carries its embedding (~1.4 KB): keep a reply well under gRPC's 64 MB limit.
        per_call = max(1, _REPLY_BYTES // (shortlist * (_b64_len(self.dim * 2) + 64)))
        result = []
        for lo in range(0, len(codes), per_call):
            result += self.client.search(self.name, data=[c.tobytes() for c in codes[lo:lo + per_call]],
                                         anns_field="code", limit=shortlist, output_fields=["emb"],
                                         consistency_level=consistency,
                                         search_params={"metric_type": "HAMMING", "params": self.search_params})
            consistency = self.search_consistency
        for q, row in enumerate(result):
            if not row:
                continue
            ids = np.array([int(hit["id"]) for hit in row], np.int64)
            stored = np.frombuffer(b"".join(base64.b64decode(hit["entity"]["emb"]) for hit in row), np.float16)
            scores = stored.reshape(len(row), self.dim).astype(np.float32) @ queries[q]
            order = np.argsort(-scores, kind="stable")[:k]
            hits.ids[q, :len(order)] = ids[order]
            hits.scores[q, :len(order)] = scores[order]
        return hits

    # -- lifecycle -----------------------------------------------------------------------------------

    def save(self) -> None:
        self.client.flush(self.name)

    def drop(self) -> None:
        self.client.drop_collection(self.name)

    def close(self) -> None:
        self.client.close()


def sign_codes(vectors: np.ndarray) -> np.ndarray:
    """512-bit sign codes of the randomly rotated vectors (the same rotation as the FAISS backend)."""
    from facesearch.index.faiss_index import _random_rotation

    return np.packbits(vectors @ _random_rotation(vectors.shape[1]) > 0, axis=1)


def _b64_len(nbytes: int) -> int:
    return 4 * ((nbytes + 2) // 3)


def _connect(pymilvus, uri: str, token: str | None, timeout: float):
    """A client, or one clear line when the server is unreachable or refuses the token (not a gRPC
    stack trace). The token never appears in the message, even if the server echoed it."""
    try:
        return pymilvus.MilvusClient(uri=uri, token=token or "", timeout=timeout)
    except pymilvus.exceptions.MilvusException as exc:
        if not uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:")):
            raise
        cause = exc.__cause__  # pymilvus says "unavailable" for both; gRPC's status tells them apart
        status = cause.code() if callable(getattr(cause, "code", None)) else None
        if getattr(status, "name", "") in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            detail = _redact(str(cause.details() or status.name), token)
            given = "the token was refused" if token else "it requires a token and none was given"
            raise MilvusAuthFailed(f"Milvus server {uri} refused the connection: {given} "
                                   f"({detail.splitlines()[0][:160]}); set FACESEARCH_MILVUS_TOKEN or "
                                   "FACESEARCH_MILVUS_TOKEN_FILE to user:password or an API key it "
                                   "accepts") from None
        reason = _redact(getattr(exc, "message", "") or str(exc), token)
        raise MilvusUnavailable(f"Milvus server {uri} is unreachable ({reason.splitlines()[0][:160]}); "
                                "check milvus_uri in config.json, that the server runs, and "
                                "FACESEARCH_MILVUS_TOKEN if it needs one") from None


def _redact(text: str, token: str | None) -> str:
    """``text`` without the token or its password half (``user:password``)."""
    for secret in (token, (token or "").partition(":")[2]):
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text
