"""Red team: looking at faces, galleries and subjects, results, and the web surface (issue 11).

Each test repeats an attack that got through before and asserts that it fails now:

- an investigator counting face ids fetches crops and photos without a search: refused, and the
  refusals are in the audit log, aggregated (no flood);
- a face fetched through the view grant of a search works, under that search's purpose, and is
  recorded; the grant is bound to its user, its faces and its hour;
- a cross-site ``<img>`` / GET cannot create a record in someone's name with a purpose of its
  choosing;
- a subject made from an ungranted collection's cluster is invisible to an ungranted investigator
  (list, show, search, identify, match, edit, delete, decide);
- a duplicate subject label answers 409 and writes no contact details to any log;
- a search shows no candidate below the threshold unless the request asks for it (audited);
- security headers on every response, no inline script, and /docs from local assets only.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from facesearch.governance.schema import ViewGrant
from tests.conftest import LFW, ApiEnv

SUBJECT_PHOTOS = Path(__file__).parent / "fixtures" / "subjects"
TEMPLATES = Path(__file__).parents[1] / "src" / "facesearch" / "api" / "templates"
#: alpha (api_ivy's): Powell twice, Bush twice; beta (nobody's but the admin's): Chavez twice
LAYOUT = {"alpha": ["Colin_Powell_0001", "Colin_Powell_0002", "George_W_Bush_0001", "George_W_Bush_0002"],
          "beta": ["Hugo_Chavez_0001", "Hugo_Chavez_0002"]}
PURPOSE, CASE = "identify a suspect in a CCTV still", "CASE-RT-1"
CONTACT = "+44 20 7946 0999, jane.doe@example.org (mother)"


@pytest.fixture
def env(api_fresh_env) -> ApiEnv:
    return api_fresh_env(layout=LAYOUT)


def records(env: ApiEnv, action: str, actor: str | None = None) -> list:
    return env.gov.audit.entries(action=action, actor=actor)


def search(env: ApiEnv, username: str, photo: str, **form) -> dict:
    response = env.search(username, LFW / f"{photo}.jpg", purpose=PURPOSE, case_ref=CASE, **form)
    assert response.status_code == 200, response.text
    return response.json()


# -- viewing faces --------------------------------------------------------------------------------------


def test_counting_face_ids_without_a_search_is_refused_and_recorded_aggregated(env):
    ivy = env.as_user("api_ivy")
    granted = [f for photo in LAYOUT["alpha"] for f in env.faces[photo]]
    assert granted, "the control: ivy is granted faces that exist"
    views_before = len(records(env, "view_photo"))
    statuses = [ivy.get(f"/api/faces/{face_id}/thumbnail").status_code for face_id in range(1, 22)]
    assert statuses == [403] * 21, statuses  # 21 crops by counting ids: not one is served
    assert ivy.get(f"/api/faces/{granted[0]}/photo").status_code == 403
    assert ivy.get(f"/api/faces/{granted[0]}").status_code == 403
    # a made-up grant is no better than none
    assert ivy.get(f"/api/faces/{granted[0]}/thumbnail", params={"view": "fv_guessed"}).status_code == 403
    assert len(records(env, "view_photo")) == views_before

    # 24 refusals, one record so far: the attempt is on record at once, and cannot flood the log
    refused = records(env, "view_refused", "api_ivy")
    assert len(refused) == 1 and refused[0].details["count"] == 1 and refused[0].details["first_of_window"]
    assert refused[0].details["sample"] == [["thumbnail", 1]]

    # when the minute is over, the next refusal writes the count of the rest of it
    tally = env.app.state.governance.refusals
    later = tally.clock() + tally.window_s + 1
    tally.clock = lambda: later
    assert ivy.get(f"/api/faces/{granted[0]}/thumbnail").status_code == 403
    refused = records(env, "view_refused", "api_ivy")
    assert [r.details["count"] for r in refused] == [1, 23, 1]
    assert refused[1].details["sample"][:2] == [["thumbnail", 2], ["thumbnail", 3]]
    assert sum(r.details["count"] for r in refused) == 25  # every refused look counted, in three records
    assert env.gov.audit.verify().ok


def test_refusal_counts_still_open_are_written_at_shutdown(api_fresh_env):
    env = api_fresh_env(layout={"alpha": ["Colin_Powell_0001"]})
    ivy = env.as_user("api_ivy")
    for face_id in range(1, 6):
        assert ivy.get(f"/api/faces/{face_id}/photo").status_code == 403
    assert [r.details["count"] for r in records(env, "view_refused", "api_ivy")] == [1]
    with TestClient(env.app):  # a second start and stop of the app (as at a restart): the stop flushes
        pass
    assert [r.details["count"] for r in records(env, "view_refused", "api_ivy")] == [1, 4]


def test_a_search_grant_opens_its_faces_and_every_look_is_recorded(env):
    body = search(env, "api_ivy", "Colin_Powell_0002")
    top = body["candidates"][0]
    assert top["face_id"] in env.faces["Colin_Powell_0001"] + env.faces["Colin_Powell_0002"]
    token = body["view_token"]
    assert top["thumbnail_url"] == f"/api/faces/{top['face_id']}/thumbnail?view={token}"
    ivy = env.as_user("api_ivy")
    assert ivy.get(top["thumbnail_url"]).status_code == 200
    assert ivy.get(top["photo_url"]).status_code == 200
    assert ivy.get(f"/api/faces/{top['face_id']}", params={"view": token}).status_code == 200

    searched = records(env, "search", "api_ivy")[-1]
    assert [r[0] for r in searched.details["results"]] == [c["face_id"] for c in body["candidates"]]
    for action in ("view_photo", "view_face"):
        viewed = records(env, action, "api_ivy")[-1]
        assert viewed.details["face_id"] == top["face_id"] and viewed.details["context_record"] == searched.id
        assert (viewed.purpose, viewed.case_ref) == (PURPOSE, CASE)  # the search's, not one typed into a URL

    # the grant covers the faces its search returned, for their searcher, for an hour
    others = [f for f in env.faces["George_W_Bush_0001"] + env.faces["Hugo_Chavez_0001"]]
    for face_id in others:
        assert ivy.get(f"/api/faces/{face_id}/thumbnail", params={"view": token}).status_code == 403
    env.grant("alpha", "api_gina")
    assert env.as_user("api_gina").get(top["thumbnail_url"]).status_code == 403  # not hers, though granted alpha
    assert ivy.get(top["thumbnail_url"]).status_code == 200  # the control: still valid for ivy
    with env.engine.catalog.session() as s:
        s.execute(update(ViewGrant).values(expires_at=datetime(2000, 1, 1)))
        s.commit()
    assert ivy.get(top["thumbnail_url"]).status_code == 403  # expired


def test_explicit_purpose_and_case_grant_is_audited_first(env):
    ivy = env.login("api_ivy")
    powell = env.faces["Colin_Powell_0001"][0]
    asked = ivy.post("/api/views", headers={"X-CSRF-Token": ivy.csrf},
                     json={"face_ids": [powell], "purpose": "check a witness statement", "case_ref": "CASE-RT-2"})
    assert asked.status_code == 201, asked.text
    granted = records(env, "view_grant", "api_ivy")[-1]
    assert granted.details["faces"] == [powell] and granted.case_ref == "CASE-RT-2"
    assert ivy.get(asked.json()["faces"][str(powell)]["photo_url"]).status_code == 200
    viewed = records(env, "view_photo", "api_ivy")[-1]
    assert viewed.details["context_record"] == granted.id and viewed.purpose == "check a witness statement"
    # without purpose or case: refused (422), nothing granted
    blank = ivy.post("/api/views", headers={"X-CSRF-Token": ivy.csrf},
                     json={"face_ids": [powell], "purpose": " ", "case_ref": "CASE-RT-2"})
    assert blank.status_code == 422
    assert len(records(env, "view_grant", "api_ivy")) == 1


def test_a_cross_site_request_cannot_record_a_view_with_a_chosen_purpose(env):
    ivy = env.login("api_ivy")
    body = search(env, "api_ivy", "Colin_Powell_0002")
    top = body["candidates"][0]
    before = env.gov.audit.entries()
    # the old attack: an <img src="/api/faces/N/photo?purpose=...&case_ref=..."> on any page
    chosen = ivy.get(f"/api/faces/{top['face_id']}/photo", params={"purpose": "attacker's story", "case_ref": "EVIL"})
    assert chosen.status_code == 403
    # with the victim's real grant, from another site: refused before any route runs
    for site in ("cross-site", "same-site"):
        img = ivy.get(top["photo_url"], headers={"Sec-Fetch-Site": site, "Sec-Fetch-Dest": "image"})
        assert img.status_code == 403 and "cross-site" in img.text
        minted = ivy.post("/api/views", headers={"X-CSRF-Token": ivy.csrf, "Sec-Fetch-Site": site},
                          json={"face_ids": [top["face_id"]], "purpose": "attacker's story", "case_ref": "EVIL"})
        assert minted.status_code == 403
    # a form post from another page without the CSRF token mints no grant either
    assert ivy.post("/api/views", json={"face_ids": [top["face_id"]], "purpose": "x", "case_ref": "EVIL"}
                    ).status_code == 403
    after = env.gov.audit.entries()[len(before):]
    assert not [e for e in after if "EVIL" in e.case_ref or "attacker" in e.purpose]
    assert not [e for e in after if e.action in ("view_photo", "view_grant")]
    # the app's own page (same origin) still works, under the search's purpose
    own = ivy.get(top["photo_url"], headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "image"})
    assert own.status_code == 200
    assert records(env, "view_photo", "api_ivy")[-1].purpose == PURPOSE
    cookie = env.anon.post("/api/login", json={"username": "api_ivy", "password": "ivy-password-1"})
    assert "samesite=strict" in cookie.headers["set-cookie"].lower()


def test_cluster_and_subject_faces_are_shown_only_under_a_recorded_view(env):
    ivy = env.as_user("api_ivy")
    assert ivy.post("/api/collections/alpha/clusters/run").status_code == 200
    listed = ivy.get("/api/collections/alpha/clusters").json()
    shown = records(env, "cluster_view", "api_ivy")[-1]
    samples = sorted(f for c in listed["clusters"] for f in c["samples"])
    assert shown.details["faces"] == samples and shown.purpose == "cluster review"
    thumb = listed["clusters"][0]["sample_thumbnails"][0]
    assert "?view=fv_" in thumb and ivy.get(thumb).status_code == 200
    assert ivy.get(thumb.split("?")[0]).status_code == 403  # the same crop by id alone

    cluster = ivy.get(f"/api/clusters/{listed['clusters'][0]['id']}").json()
    assert ivy.get(cluster["faces"][0]["photo_url"]).status_code == 200
    assert records(env, "view_photo", "api_ivy")[-1].case_ref == f"cluster {cluster['id']}"

    ivy.post("/api/galleries", json={"name": "rt-seen"})
    sid = ivy.post("/api/subjects", json={"gallery": "rt-seen", "label": "someone"}).json()["id"]
    enrolled = ivy.post(f"/api/subjects/{sid}/faces", files=[(
        "files", ("p.jpg", (SUBJECT_PHOTOS / "Colin_Powell_0003.jpg").read_bytes(), "image/jpeg"))]).json()
    face = enrolled["added"][0]
    assert ivy.get(face["thumbnail_url"]).status_code == 200
    assert ivy.get(f"/api/subject-faces/{face['id']}/thumbnail").status_code == 403  # by id alone
    subject = ivy.get(f"/api/subjects/{sid}").json()
    viewed = records(env, "subject_view", "api_ivy")[-1]
    assert viewed.details == {"subject_id": sid, "faces": [], "subject_faces": [face["id"]]}
    assert ivy.get(subject["enrolled"][0]["thumbnail_url"]).status_code == 200


# -- galleries and subjects --------------------------------------------------------------------------------


def test_a_subject_from_an_ungranted_collections_cluster_is_invisible(env):
    admin, ivy = env.as_user("api_admin"), env.as_user("api_ivy")
    assert admin.post("/api/collections/beta/clusters/run").status_code == 200
    beta = admin.get("/api/collections/beta/clusters").json()["clusters"][0]
    made = admin.post(f"/api/clusters/{beta['id']}/subject",
                      json={"gallery": "shared", "label": "Chavez", "attributes": {"contact": CONTACT}})
    assert made.status_code == 201, made.text
    sid = made.json()["subject_id"]
    mine = ivy.post("/api/subjects", json={"gallery": "shared", "label": "ivy's own"})  # a control in the gallery
    assert mine.status_code == 201
    assert sid in [s["id"] for s in admin.get("/api/subjects").json()]  # the control: the admin sees it

    listed = ivy.get("/api/subjects").json() + ivy.get("/api/subjects", params={"gallery": "shared"}).json()
    assert sid not in [s["id"] for s in listed] and "Chavez" not in str(listed)
    assert mine.json()["id"] in [s["id"] for s in listed]
    absent = ivy.get("/api/subjects/987654")
    shown = ivy.get(f"/api/subjects/{sid}")
    assert shown.status_code == absent.status_code == 404  # the same answer as a subject that does not exist
    assert "Chavez" not in shown.text and CONTACT not in shown.text
    why = {"purpose": PURPOSE, "case_ref": CASE}
    assert ivy.post(f"/api/subjects/{sid}/search", json=why).status_code == 404
    assert ivy.put(f"/api/subjects/{sid}/attributes", json={"attributes": {"x": "y"}}).status_code == 404
    assert ivy.delete(f"/api/subjects/{sid}").status_code == 404
    assert ivy.get(f"/api/subjects/{sid}/decisions").status_code == 404
    assert ivy.post(f"/api/subjects/{sid}/decisions", json={"decision": "reject", **why}).status_code == 404
    enrolled = made.json()["enrolled"][0]
    assert ivy.delete(f"/api/subject-faces/{enrolled}").status_code == 404
    probe = (SUBJECT_PHOTOS / "Hugo_Chavez_0003.jpg").read_bytes()
    identify = {"files": {"probe": ("p.jpg", probe, "image/jpeg")}, "data": {**why, "galleries": "shared"}}
    found = ivy.post("/api/subjects/identify", **identify)
    assert found.status_code == 200 and sid not in [c["subject_id"] for c in found.json()["candidates"]]
    matched = ivy.post("/api/galleries/match", json={"gallery_a": "shared", "gallery_b": "shared", **why}).json()
    assert all(sid not in (p["subject_a"], p["subject_b"]) for p in matched["pairs"])
    # only subjects with enrolled faces take part: the admin's one counts for the admin, not for ivy
    assert matched["subjects_a"] == 0
    assert admin.post("/api/galleries/match", json={"gallery_a": "shared", "gallery_b": "shared", **why}
                      ).json()["subjects_a"] == 1
    counts = {g["name"]: g["subjects"] for g in ivy.get("/api/galleries").json()}
    assert counts["shared"] == 1 and {g["name"]: g["subjects"] for g in admin.get("/api/galleries").json()
                                      }["shared"] == 2
    assert env.as_user("api_admin").get(f"/api/subjects/{sid}").json()["attributes"] == {"contact": CONTACT}

    # the control: the admin's identify finds it, and granting beta to ivy shows it to her
    admin_found = admin.post("/api/subjects/identify", **identify).json()
    assert admin_found["candidates"][0]["subject_id"] == sid
    env.grant("beta", "api_ivy")
    assert ivy.get(f"/api/subjects/{sid}").status_code == 200
    assert ivy.post("/api/subjects/identify", **identify).json()["candidates"][0]["subject_id"] == sid


def test_enrolling_a_face_of_a_collection_carries_its_grant(env):
    admin, ivy = env.as_user("api_admin"), env.as_user("api_ivy")
    admin.post("/api/galleries", json={"name": "mixed"})
    sid = admin.post("/api/subjects", json={"gallery": "mixed", "label": "seen by everyone"}).json()["id"]
    assert ivy.get(f"/api/subjects/{sid}").status_code == 200  # no collection yet: every investigator sees it
    chavez = env.faces["Hugo_Chavez_0001"][0]
    assert admin.post(f"/api/subjects/{sid}/faces/from-index", json={"face_ids": [chavez]}).status_code == 200
    assert ivy.get(f"/api/subjects/{sid}").status_code == 404  # made from beta's face now: beta's grant


def test_duplicate_subject_label_is_409_and_no_contact_details_reach_a_log(env, caplog):
    ivy = env.as_user("api_ivy")
    ivy.post("/api/galleries", json={"name": "missing"})
    body = {"gallery": "missing", "label": "Jane Doe", "attributes": {"contact": CONTACT}}
    caplog.set_level(logging.DEBUG)
    assert ivy.post("/api/subjects", json=body).status_code == 201
    again = ivy.post("/api/subjects", json=body)
    assert again.status_code == 409, again.text
    assert "already has a subject labelled 'Jane Doe'" in again.json()["detail"]
    assert CONTACT not in again.text
    assert ivy.post("/api/galleries", json={"name": "missing"}).status_code == 409
    assert ivy.post("/api/collections/alpha/clusters/run").status_code == 200
    cluster = ivy.get("/api/collections/alpha/clusters").json()["clusters"][0]
    dup = ivy.post(f"/api/clusters/{cluster['id']}/subject", json={**body, "label": "Jane Doe"})
    assert dup.status_code == 409, dup.text
    assert caplog.records, "the control: logging was captured"
    assert CONTACT not in caplog.text and "jane.doe@example.org" not in caplog.text
    for entry in env.gov.audit.entries():
        assert "jane.doe" not in str(entry.details)


# -- results ------------------------------------------------------------------------------------------------


def test_a_search_shows_no_stranger_unless_asked_and_the_asking_is_recorded(env):
    body = search(env, "api_ivy", "Hugo_Chavez_0002")  # Chavez is only in beta: alpha holds strangers
    assert body["candidates"] == [] and body["weaker_withheld"] == 4 and not body["confident_match"]
    record = records(env, "search", "api_ivy")[-1]
    assert record.details["include_weaker"] is False and record.details["weaker_withheld"] == 4
    assert record.details["results"] == []
    asked = search(env, "api_ivy", "Hugo_Chavez_0002", include_weaker="true")
    assert len(asked["candidates"]) == 4 and not any(c["above_threshold"] for c in asked["candidates"])
    record = records(env, "search", "api_ivy")[-1]
    assert record.details["include_weaker"] is True and len(record.details["results"]) == 4

    # the person who is there is shown; the strangers beside them are not
    found = search(env, "api_ivy", "Colin_Powell_0002")
    assert found["candidates"] and all(c["above_threshold"] for c in found["candidates"])
    assert found["weaker_withheld"] >= 2  # Bush's two faces

    ivy = env.as_user("api_ivy")
    ivy.post("/api/galleries", json={"name": "rt-g"})
    sid = ivy.post("/api/subjects", json={"gallery": "rt-g", "label": "stranger"}).json()["id"]
    ivy.post(f"/api/subjects/{sid}/faces", files=[(
        "files", ("p.jpg", (SUBJECT_PHOTOS / "Hugo_Chavez_0003.jpg").read_bytes(), "image/jpeg"))])
    why = {"purpose": PURPOSE, "case_ref": CASE}
    minimal = ivy.post(f"/api/subjects/{sid}/search", json=why).json()
    assert minimal["candidates"] == [] and minimal["weaker_withheld"] == 4
    full = ivy.post(f"/api/subjects/{sid}/search", json={**why, "include_weaker": True}).json()
    assert len(full["candidates"]) == 4
    assert records(env, "subject_search", "api_ivy")[-1].details["include_weaker"] is True


def test_cli_search_withholds_weaker_candidates_unless_asked(env, cli):
    home = str(env.home)
    code, out, _ = cli("search", "--home", home, str(LFW / "Hugo_Chavez_0002.jpg"), "--collection", "alpha",
                       "--purpose", PURPOSE, "--case", CASE, "--json")
    assert code == 0
    assert json.loads(out)["candidates"] == [] and json.loads(out)["weaker_withheld"] == 4
    code, out, _ = cli("search", "--home", home, str(LFW / "Hugo_Chavez_0002.jpg"), "--collection", "alpha",
                       "--purpose", PURPOSE, "--case", CASE, "--json", "--include-weaker")
    assert code == 0 and len(json.loads(out)["candidates"]) == 4
    assert records(env, "search")[-1].details["include_weaker"] is True


# -- the web surface --------------------------------------------------------------------------------------


def test_security_headers_on_every_response(env):
    ivy = env.login("api_ivy")
    responses = [ivy.get(path) for path in ("/", "/login", "/subjects", "/api/me", "/static/app.js", "/health",
                                            "/docs", "/openapi.json", "/no-such-page")]
    responses += [env.anon.get("/api/me"), ivy.get("/api/faces/1/thumbnail")]  # 401 and 403 too
    for response in responses:
        csp = response.headers.get("content-security-policy", "")
        script = re.search(r"script-src ([^;]*)", csp)
        assert script and script.group(1).strip() == "'self'", (response.url, csp)
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert "'unsafe-inline'" not in responses[0].headers["content-security-policy"]


def test_templates_have_no_inline_script_or_handler(env):
    pattern = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\son[a-z]+\s*=|\sstyle\s*=|javascript:", re.I)
    for template in TEMPLATES.glob("*.html"):
        assert not pattern.search(template.read_text()), template.name
    ivy = env.login("api_ivy")
    for path in ("/", "/collections", "/subjects", "/subjects/1", "/clusters", "/clusters/1", "/photo/1", "/login"):
        page = ivy.get(path)
        assert page.status_code == 200 and not pattern.search(page.text), path


def test_docs_load_nothing_from_another_host(env):
    docs = env.anon.get("/docs")
    assert docs.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", docs.text)
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "cdn" not in docs.text.lower() and "http://" not in docs.text and "https://" not in docs.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", docs.text), "inline script on /docs"
    for url in urls:  # and what it names is served from this host
        assert env.anon.get(url).status_code == 200, url
    assert "SwaggerUIBundle" in env.anon.get("/static-docs/swagger-ui-bundle.js").text[:100_000]
