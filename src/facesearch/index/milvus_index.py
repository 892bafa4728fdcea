"""Milvus backend through pymilvus: milvus-lite (a local file) on a laptop and in tests, a
Milvus server or cluster by URI for collections that outgrow one machine.

One Milvus collection per facesearch collection; the primary key is the catalog face id.
"""

from __future__ import annotations

import numpy as np

from facesearch.index.base import Hits, as_queries, empty_hits

_QUERY_PAGE = 10_000


class MilvusIndex:
    def __init__(self, uri: str, name: str, dim: int = 512, index_type: str = "FLAT",
                 token: str | None = None) -> None:
        from facesearch.extras import require

        pymilvus = require("pymilvus", "milvus", "the Milvus index backend")
        DataType, MilvusClient = pymilvus.DataType, pymilvus.MilvusClient

        self.uri = uri
        self.name = name
        self.dim = dim
        self.index_type = index_type
        self.client = MilvusClient(uri=uri, token=token or "")
        if not self.client.has_collection(name):
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            params = self.client.prepare_index_params()
            params.add_index(field_name="vector", index_type=index_type, metric_type="IP")
            self.client.create_collection(name, schema=schema, index_params=params,
                                          consistency_level="Strong")
        self.client.load_collection(name)

    def __len__(self) -> int:
        return len(self.ids())

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64).reshape(-1)
        vectors = as_queries(vectors, self.dim)
        if len(ids) == 0:
            return
        rows = [{"id": int(i), "vector": v.tolist()} for i, v in zip(ids, vectors)]
        self.client.upsert(self.name, rows)

    def remove(self, ids) -> int:
        ids = [int(i) for i in np.asarray(ids, np.int64).reshape(-1)]
        if not ids:
            return 0
        present = self.client.get(self.name, ids=ids, output_fields=["id"])
        self.client.delete(self.name, ids=ids)
        return len(present)

    def search(self, queries: np.ndarray, k: int) -> Hits:
        queries = as_queries(queries, self.dim)
        hits = empty_hits(len(queries), k)
        if k <= 0:
            return hits
        result = self.client.search(self.name, data=queries.tolist(), limit=k, output_fields=["id"],
                                    search_params={"metric_type": "IP"})
        for q, row in enumerate(result):
            for r, hit in enumerate(row[:k]):
                hits.ids[q, r] = int(hit["id"])
                hits.scores[q, r] = float(hit["distance"])
        return hits

    def ids(self) -> np.ndarray:
        found: list[int] = []
        last = -(2**63)
        while True:
            page = self.client.query(self.name, filter=f"id > {last}", output_fields=["id"], limit=_QUERY_PAGE)
            if not page:
                break
            page_ids = sorted(int(row["id"]) for row in page)
            found.extend(page_ids)
            last = page_ids[-1]
            if len(page) < _QUERY_PAGE:
                break
        return np.array(found, np.int64)

    def save(self) -> None:
        self.client.flush(self.name)

    def drop(self) -> None:
        self.client.drop_collection(self.name)

    def describe(self) -> dict:
        return {"backend": "milvus", "uri": self.uri, "collection": self.name, "index_type": self.index_type,
                "faces": len(self)}
