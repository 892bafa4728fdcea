"""Distributed ingest on Ray: detection and embedding run as Ray actors, one model session each.

:class:`RayAnalyzer` offers what the ingest runner asks of a :class:`~facesearch.pipeline.FaceAnalyzer`
(``pack`` and ``analyze_photos``), so ``facesearch index PATHS --ray ADDRESS`` goes through the very
same :class:`~facesearch.ingest.Ingestor`, catalog and index path as a local run: the same journal,
resumability, deduplication (by content hash, before any photo is sent), opt-out suppression,
audit record and counts. Only where faces are found and embedded changes.

- Each actor holds one :class:`FaceAnalyzer` (its model sessions load once, on the actor's node)
  with one inference thread, and takes one CPU of the cluster: by default one actor per CPU.
- A batch of photos is split into one contiguous chunk per actor and the chunks run at once; the
  faces come back in the photos' order. The runner sends batches of ``batch_images`` photos
  (:data:`PHOTOS_PER_ACTOR` per actor), decoded ahead in its threads while the actors work.
- Decoding (at working resolution) stays with the runner: it needs the pixels for thumbnails
  anyway, and sending them costs less than decoding twice. Videos are analysed on the driver
  (their frames are tracked in order, see :mod:`facesearch.pipeline.tracking`).

``ADDRESS`` is a running cluster's address (``HOST:PORT``, or ``auto``), or ``local`` to start a
Ray instance on this machine for the run. Every node address is kept on loopback (127.0.0.1) for
``local``: left alone, Ray picks the machine's interface address, which may not be reachable.
A pinned local model pack must exist at the same path on every node.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from facesearch.errors import FacesearchError
from facesearch.extras import require
from facesearch.models import load_pack
from facesearch.pipeline import Face, FaceAnalyzer
from facesearch.pipeline.imageio import Photo

#: Photos each actor gets per batch: enough to batch the detector, small enough to keep memory low.
PHOTOS_PER_ACTOR = 8
#: Ray reads this when it is imported: "0" keeps a node's own address on loopback (127.0.0.1).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray(loopback: bool = False) -> Any:
    """The ``ray`` module (the ``[ray]`` extra), or a clear error. ``loopback``: node addresses
    on 127.0.0.1, which must be decided before Ray is first imported."""
    if loopback:
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    return require("ray", "ray", "distributed ingest (--ray)")


@contextmanager
def ray_cluster(address: str, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Connected to the Ray cluster at ``address`` (``local``: a fresh one on 127.0.0.1, stopped at
    the end) for the duration; yields the ``ray`` module."""
    local = address == "local"
    if not local and address != "auto":
        _check_reachable(address)
    # A cluster on this machine's loopback (tests, one-machine runs): this driver's node address too.
    ray = import_ray(loopback=local or address.split(":")[0] in ("127.0.0.1", "localhost"))
    try:
        if local:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise FacesearchError(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A clear error at once when nothing listens at ``HOST:PORT`` (``ray.init`` would retry for minutes)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise FacesearchError(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc


class _AnalyzerActor:
    """One model session on one node (wrapped by ``ray.remote`` in :class:`RayAnalyzer`)."""

    def __init__(self, pack: str | None, threads: int) -> None:
        self.analyzer = FaceAnalyzer(pack, threads=threads)

    def analyze_photos(self, photos: list[Photo], embed: bool) -> list[tuple[list[Face], int]]:
        """Faces of each photo, and how far it was turned upright (the driver turns its own copy)."""
        found = self.analyzer.analyze_photos(photos, embed=embed)
        return [(faces, photo.rotation) for faces, photo in zip(found, photos)]

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


class RayAnalyzer:
    """The analyzer interface of the ingest runner, served by Ray actors (see the module docstring)."""

    def __init__(self, pack: str | None = None, *, actors: int | None = None, threads_per_actor: int = 1) -> None:
        self._ray = import_ray()
        if not self._ray.is_initialized():
            raise FacesearchError("RayAnalyzer needs a connected Ray cluster (see ray_cluster)")
        self.pack = load_pack(pack, verify=False)  # names and sizes only: the actors load the models
        self._pack_name = pack
        count = actors or max(1, int(self._ray.cluster_resources().get("CPU", 1)))
        remote = self._ray.remote(num_cpus=1)(_AnalyzerActor)
        self._actors = [remote.remote(pack, threads_per_actor) for _ in range(count)]
        self._local: FaceAnalyzer | None = None

    @property
    def actors(self) -> int:
        return len(self._actors)

    @property
    def batch_images(self) -> int:
        """The batch the runner should send: :data:`PHOTOS_PER_ACTOR` per actor."""
        return PHOTOS_PER_ACTOR * len(self._actors)

    def nodes(self) -> int:
        """How many distinct cluster nodes the actors run on (waits for them to start)."""
        return len(set(self._ray.get([actor.node.remote() for actor in self._actors])))

    def analyze_photos(self, photos: list[Photo], *, embed: bool = True) -> list[list[Face]]:
        """Faces of each photo, in order: one contiguous chunk per actor, all at once."""
        if not photos:
            return []
        count = min(len(self._actors), len(photos))
        size, extra = divmod(len(photos), count)
        chunks, start = [], 0
        for i in range(count):
            end = start + size + (1 if i < extra else 0)
            chunks.append(photos[start:end])
            start = end
        futures = [actor.analyze_photos.remote(chunk, embed) for actor, chunk in zip(self._actors, chunks)]
        results = [result for part in self._ray.get(futures) for result in part]
        for photo, (_, rotation) in zip(photos, results):
            if rotation != photo.rotation:  # an actor turned its copy of a sideways scan: turn ours alike
                photo.turn((rotation - photo.rotation) % 360)
        return [faces for faces, _ in results]

    def analyze_batch(self, images, *, embed: bool = True) -> list[list[Face]]:
        """Video frames (tracked in order on the driver) and anything else: a local analyzer."""
        if self._local is None:
            self._local = FaceAnalyzer(self._pack_name)
        return self._local.analyze_batch(images, embed=embed)

    def analyze(self, image, *, embed: bool = True) -> list[Face]:
        return self.analyze_batch([image], embed=embed)[0]

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
