"""Route-table entries of the subject and gallery routes, for tests/test_api.py's ROUTES.

``subject_routes(Call, Route)`` returns ``{(method, path): Route}`` built from test_api's own
classes (passed in, so this module does not import test_api). Every entry builds a complete,
valid request on the shared ``api_env`` and, where it can, says how to see that it took effect.
"""

from __future__ import annotations

import itertools

from tests.conftest import LFW

SEARCHERS = ("admin", "investigator")
GALLERY = "api_subjects"
_serial = itertools.count(1)


def _unique(prefix: str) -> str:
    return f"{prefix}{next(_serial)}"


def _subjects(env):
    """One SubjectGovernance per environment (setup and inspection; the app has its own)."""
    if not hasattr(env, "subject_gov"):
        from facesearch.governance.subjects import SubjectGovernance

        env.subject_gov = SubjectGovernance(env.gov)
        try:
            env.subject_gov.subjects.gallery(GALLERY)
        except Exception:  # noqa: BLE001 - first use: create it
            env.subject_gov.subjects.create_gallery(GALLERY, "route table", "setup")
    return env.subject_gov.subjects


def _new_subject(env, faces: bool = False) -> int:
    subjects = _subjects(env)
    info = subjects.add(GALLERY, _unique("person "), {"contact": "+1 555 0100"}, "setup")
    if faces:  # from the indexed Powell face of alpha (granted to api_ivy): no model run needed
        subjects.enroll_faces(info.id, [env.faces["Colin_Powell_0001"][0]], created_by="setup")
    return info.id


def _photo_subject(env) -> int:
    """A subject enrolled from an uploaded photo (its own thumbnail), made once per environment."""
    if not hasattr(env, "photo_subject"):
        subjects = _subjects(env)
        info = subjects.add(GALLERY, _unique("photo person "), {}, "setup")
        subjects.enroll(info.id, [("Colin_Powell_0002.jpg", (LFW / "Colin_Powell_0002.jpg").read_bytes())])
        env.photo_subject = info.id
    return env.photo_subject


def _audited(env, action: str):
    before = len(env.gov.audit.entries(action=action))
    return lambda: len(env.gov.audit.entries(action=action)) > before


def _why(**extra) -> dict:
    return {"purpose": "find a missing person", "case_ref": "CASE-SUBJ-1", **extra}


def subject_routes(Call, Route) -> dict:  # noqa: N803 - the classes of test_api
    def get(path_of):
        return lambda env, _tmp: Call(path_of(env))

    def create_gallery(env, _tmp):
        _subjects(env)
        name = _unique("api_gal_")
        return Call("/api/galleries", {"json": {"name": name, "description": "test"}},
                    lambda: name in {g.name for g in _subjects(env).galleries()})

    def remove_gallery(env, _tmp):
        subjects = _subjects(env)
        name = _unique("api_gone_gal_")
        subjects.create_gallery(name, "", "setup")
        subjects.enroll_faces(subjects.add(name, "someone", {}, "setup").id, [env.faces["Colin_Powell_0001"][0]])
        return Call(f"/api/galleries/{name}", {}, lambda: name not in {g.name for g in subjects.galleries()})

    def match(env, _tmp):
        _new_subject(env, faces=True)
        return Call("/api/galleries/match", {"json": _why(gallery_a=GALLERY, gallery_b=GALLERY)},
                    _audited(env, "gallery_match"))

    def import_folder(env, _tmp):
        _subjects(env)
        name, label = _unique("api_import_gal_"), _unique("imported person ")
        photo = (LFW / "Colin_Powell_0002.jpg").read_bytes()
        return Call(f"/api/galleries/{name}/import",
                    {"files": [("files", ("a.jpg", photo, "image/jpeg"))], "data": {"paths": [f"{label}/a.jpg"]}},
                    lambda: bool(_subjects(env).store.subjects(label=label)))

    def add_subject(env, _tmp):
        _subjects(env)
        label = _unique("new person ")
        return Call("/api/subjects", {"json": {"gallery": GALLERY, "label": label, "attributes": {"case": "7"}}},
                    lambda: bool(_subjects(env).store.subjects(label=label)))

    def attributes(env, _tmp):
        subject_id = _new_subject(env)
        return Call(f"/api/subjects/{subject_id}/attributes", {"json": {"attributes": {"last seen": "2026-01-02"}}},
                    lambda: _subjects(env).subject(subject_id).attributes == {"last seen": "2026-01-02"})

    def remove(env, _tmp):
        subject_id = _new_subject(env, faces=True)
        return Call(f"/api/subjects/{subject_id}", {},
                    lambda: not _subjects(env).store.subjects(ids=[subject_id]))

    def enrol_photo(env, _tmp):
        subject_id = _new_subject(env)
        photo = ("Colin_Powell_0002.jpg", (LFW / "Colin_Powell_0002.jpg").read_bytes(), "image/jpeg")
        return Call(f"/api/subjects/{subject_id}/faces", {"files": [("files", photo)]},
                    lambda: _subjects(env).subject(subject_id).faces == 1)

    def enrol_index(env, _tmp):
        subject_id = _new_subject(env)
        return Call(f"/api/subjects/{subject_id}/faces/from-index",
                    {"json": {"face_ids": [env.faces["Colin_Powell_0001"][0]]}},
                    lambda: _subjects(env).subject(subject_id).faces == 1)

    def remove_face(env, _tmp):
        subject_id = _new_subject(env, faces=True)
        face = _subjects(env).faces(subject_id)[0].id
        return Call(f"/api/subject-faces/{face}", {}, lambda: _subjects(env).subject(subject_id).faces == 0)

    def thumbnail(env, _tmp):
        subject_id = _photo_subject(env)
        face = _subjects(env).faces(subject_id)[0].id

        def with_grant(username: str):  # the grant a subject view issues to this user
            token = env.subject_gov.shown(env.gov.accounts.user(username), subject_id, subject_face_ids=[face])
            return Call(f"/api/subject-faces/{face}/thumbnail?view={token}")

        return Call(f"/api/subject-faces/{face}/thumbnail", as_user=with_grant)

    def search(env, _tmp):
        subject_id = _photo_subject(env)
        return Call(f"/api/subjects/{subject_id}/search", {"json": _why()}, _audited(env, "subject_search"))

    def identify(env, _tmp):
        _photo_subject(env)
        probe = ("p.jpg", (LFW / "Colin_Powell_0001.jpg").read_bytes(), "image/jpeg")
        return Call("/api/subjects/identify", {"files": {"probe": probe}, "data": _why()},
                    _audited(env, "subject_identify"))

    def decide(env, _tmp):
        subject_id = _photo_subject(env)
        before = len(_subjects(env).decisions(subject_id))
        return Call(f"/api/subjects/{subject_id}/decisions",
                    {"json": {"decision": "reject", "face_id": env.faces["George_W_Bush_0001"][0], "note": "test"}},
                    lambda: len(_subjects(env).decisions(subject_id)) > before)

    return {
        ("GET", "/api/galleries"): Route(SEARCHERS, get(lambda env: "/api/galleries")),
        ("POST", "/api/galleries"): Route(SEARCHERS, create_gallery, 201),
        ("DELETE", "/api/galleries/{name}"): Route(("admin",), remove_gallery),
        ("POST", "/api/galleries/match"): Route(SEARCHERS, match),
        ("POST", "/api/galleries/{name}/import"): Route(SEARCHERS, import_folder),
        ("GET", "/api/subjects"): Route(SEARCHERS, get(lambda env: f"/api/subjects?gallery={GALLERY}")),
        ("POST", "/api/subjects"): Route(SEARCHERS, add_subject, 201),
        ("GET", "/api/subjects/{subject_id}"): Route(
            SEARCHERS, get(lambda env: f"/api/subjects/{_photo_subject(env)}")),
        ("PUT", "/api/subjects/{subject_id}/attributes"): Route(SEARCHERS, attributes),
        ("DELETE", "/api/subjects/{subject_id}"): Route(SEARCHERS, remove),
        ("POST", "/api/subjects/{subject_id}/faces"): Route(SEARCHERS, enrol_photo),
        ("POST", "/api/subjects/{subject_id}/faces/from-index"): Route(SEARCHERS, enrol_index),
        ("DELETE", "/api/subject-faces/{subject_face_id}"): Route(SEARCHERS, remove_face),
        ("GET", "/api/subject-faces/{subject_face_id}/thumbnail"): Route(SEARCHERS, thumbnail),
        ("POST", "/api/subjects/{subject_id}/search"): Route(SEARCHERS, search),
        ("POST", "/api/subjects/identify"): Route(SEARCHERS, identify),
        ("POST", "/api/subjects/{subject_id}/decisions"): Route(SEARCHERS, decide, 201),
        ("GET", "/api/subjects/{subject_id}/decisions"): Route(
            SEARCHERS, get(lambda env: f"/api/subjects/{_photo_subject(env)}/decisions")),
    }
