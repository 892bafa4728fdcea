"""Route-table entries of the cluster routes, for tests/test_api.py's ROUTES.

``cluster_routes(Call, Route)`` returns ``{(method, path): Route}`` built from test_api's own
classes (passed in, so this module does not import test_api). Every entry builds a complete,
valid request on the shared ``api_env`` (collection ``alpha``, granted to the investigator:
Powell's and Bush's first photos) and says how to see that it took effect. The clusters
are made directly through the service, so no route depends on another.
"""

from __future__ import annotations

import itertools

SEARCHERS = ("admin", "investigator")
COLLECTION = "alpha"
_serial = itertools.count(1)


def _clusters(env):
    if not hasattr(env, "cluster_service"):
        from facesearch.services.clusters import Clusters

        env.cluster_service = Clusters(env.engine)
    return env.cluster_service


def _faces(env) -> tuple[int, int]:
    return env.faces["Colin_Powell_0001"][0], env.faces["George_W_Bush_0001"][0]


def _cluster_of(env, face_id: int) -> int | None:
    return _clusters(env).cluster_of(face_id)


def _group(env, *face_ids: int) -> int:
    """A fresh cluster of these faces of alpha (taken from wherever they were)."""
    return _clusters(env).new_cluster(COLLECTION, list(face_ids), by="setup")


def _audited(env, action: str):
    before = len(env.gov.audit.entries(action=action))
    return lambda: len(env.gov.audit.entries(action=action)) > before


def cluster_routes(Call, Route) -> dict:  # noqa: N803 - the classes of test_api
    def run(env, _tmp):
        return Call(f"/api/collections/{COLLECTION}/clusters/run", {"json": {"full": False}},
                    _audited(env, "cluster_run"))

    def overview(env, _tmp):
        return Call(f"/api/collections/{COLLECTION}/clusters?limit=10&samples=4")

    def show(env, _tmp):
        return Call(f"/api/clusters/{_group(env, *_faces(env))}")

    def merge(env, _tmp):
        powell, bush = _faces(env)
        a, b = _group(env, powell), _group(env, bush)
        return Call("/api/clusters/merge", {"json": {"cluster_ids": [a, b], "into": a}},
                    lambda: _cluster_of(env, bush) == a)

    def split(env, _tmp):
        powell, bush = _faces(env)
        cluster = _group(env, powell, bush)
        return Call(f"/api/clusters/{cluster}/split", {"json": {"face_ids": [bush]}},
                    lambda: _cluster_of(env, bush) not in (cluster, None))

    def move(env, _tmp):
        powell, bush = _faces(env)
        a = _group(env, powell)
        _group(env, bush)
        return Call(f"/api/clusters/{a}/faces", {"json": {"face_ids": [bush]}}, lambda: _cluster_of(env, bush) == a)

    def unassign(env, _tmp):
        powell, bush = _faces(env)
        cluster = _group(env, powell, bush)
        return Call(f"/api/clusters/{cluster}/unassign", {"json": {"face_ids": [powell]}},
                    lambda: _cluster_of(env, powell) is None)

    def name(env, _tmp):
        cluster = _group(env, *_faces(env))
        label = f"person {next(_serial)}"
        return Call(f"/api/clusters/{cluster}/name", {"json": {"name": label}},
                    lambda: _clusters(env).store.clusters(ids=[cluster])[cluster].name == label)

    def to_subject(env, _tmp):
        powell, _ = _faces(env)
        cluster = _group(env, powell)
        body = {"gallery": "api_clusters", "label": f"found person {next(_serial)}"}
        return Call(f"/api/clusters/{cluster}/subject", {"json": body},
                    lambda: _clusters(env).store.clusters(ids=[cluster])[cluster].subject_id is not None)

    def suggestions(env, _tmp):
        return Call(f"/api/collections/{COLLECTION}/clusters/suggestions?limit=5")

    def answer_merge(env, _tmp):
        powell, bush = _faces(env)
        a, b = _group(env, powell), _group(env, bush)
        return Call("/api/clusters/suggestions/merge", {"json": {"cluster_a": a, "cluster_b": b, "accept": False}},
                    _audited(env, "cluster_suggestion"))

    def answer_attach(env, _tmp):
        powell, bush = _faces(env)
        a = _group(env, powell)
        return Call("/api/clusters/suggestions/attach", {"json": {"face_id": bush, "cluster_id": a, "accept": False}},
                    _audited(env, "cluster_suggestion"))

    return {
        ("GET", "/api/collections/{name}/clusters/suggestions"): Route(SEARCHERS, suggestions),
        ("POST", "/api/clusters/suggestions/merge"): Route(SEARCHERS, answer_merge),
        ("POST", "/api/clusters/suggestions/attach"): Route(SEARCHERS, answer_attach),
        ("POST", "/api/collections/{name}/clusters/run"): Route(SEARCHERS, run),
        ("GET", "/api/collections/{name}/clusters"): Route(SEARCHERS, overview),
        ("GET", "/api/clusters/{cluster_id}"): Route(SEARCHERS, show),
        ("POST", "/api/clusters/merge"): Route(SEARCHERS, merge),
        ("POST", "/api/clusters/{cluster_id}/split"): Route(SEARCHERS, split, 201),
        ("POST", "/api/clusters/{cluster_id}/faces"): Route(SEARCHERS, move),
        ("POST", "/api/clusters/{cluster_id}/unassign"): Route(SEARCHERS, unassign),
        ("PUT", "/api/clusters/{cluster_id}/name"): Route(SEARCHERS, name),
        ("POST", "/api/clusters/{cluster_id}/subject"): Route(SEARCHERS, to_subject, 201),
    }
