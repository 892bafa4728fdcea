"""`facesearch subject import DIR --gallery G`: one folder per person, a manifest with attributes,
per-person reports of photos without a usable face and of files that do not decode, the same
audited calls as one-by-one enrolment, and a re-run that adds nothing twice.

Real models on the fixture photos (tests/fixtures/lfw and tests/fixtures/subjects).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import LFW

MORE = Path(__file__).parent / "fixtures" / "subjects"


@pytest.fixture
def registry(tmp_path, no_face_path) -> Path:
    """Two people, a manifest, a photo without a face, a file that is no photo, a loose file."""
    root = tmp_path / "registry"
    powell, chavez = root / "Colin Powell", root / "Hugo Chavez"
    powell.mkdir(parents=True)
    chavez.mkdir()
    shutil.copy(LFW / "Colin_Powell_0001.jpg", powell / "a.jpg")
    shutil.copy(MORE / "Colin_Powell_0003.jpg", powell / "b.jpg")
    shutil.copy(no_face_path, powell / "landscape.png")
    (powell / "notes.jpg").write_bytes(b"not a jpeg at all")
    shutil.copy(LFW / "Hugo_Chavez_0001.jpg", chavez / "1.jpg")
    (root / "manifest.csv").write_text("folder,label,case,last_seen\n"
                                       "Colin Powell,,2026-114,2026-03-02\n"
                                       "Hugo Chavez,H. Chavez,2026-115,\n")
    (root / "README.txt").write_text("scanned by the registry office\n")
    return root


def _import(cli, registry: Path, home: Path):
    code, out, err = cli("subject", "import", registry, "--gallery", "missing", "--home", home, "--json")
    return code, json.loads(out) if out.strip() else None, err


def _audit(cli, home: Path) -> list[dict]:
    code, out, _ = cli("audit", "export", "--home", home)
    assert code == 0
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_import_reports_per_person_and_is_audited(cli, registry, tmp_path):
    home = tmp_path / "home"
    code, report, _ = _import(cli, registry, home)
    assert code == 1  # something needs a look: the faceless photo and the broken file
    assert report["gallery_created"] and report["ignored"] == ["README.txt"]
    people = {p["folder"]: p for p in report["people"]}
    powell, chavez = people["Colin Powell"], people["Hugo Chavez"]
    assert powell["label"] == "Colin Powell" and chavez["label"] == "H. Chavez"
    assert powell["created"] and len(powell["enrolled"]) == 2 and len(chavez["enrolled"]) == 1
    assert [name for name, _ in powell["no_face"]] == ["Colin Powell/landscape.png"]
    assert [name for name, _ in powell["unreadable"]] == ["Colin Powell/notes.jpg"]
    assert report["summary"] == {"people": 2, "created": 2, "enrolled": 3, "already_enrolled": 0, "no_face": 1,
                                 "unreadable": 1, "suppressed": 0}

    code, out, _ = cli("subject", "show", "H. Chavez", "--gallery", "missing", "--home", home, "--json")
    assert code == 0 and json.loads(out)["subject"]["attributes"] == {"case": "2026-115"}

    records = _audit(cli, home)
    actions = [r["action"] for r in records]
    assert actions.count("subject_add") == 2 and actions.count("subject_enroll") == 2
    [summary] = [r for r in records if r["action"] == "subject_import"]
    assert summary["details"]["enrolled"] == 3 and len(summary["details"]["subject_ids"]) == 2
    text = json.dumps(records)
    assert "Colin Powell" not in text and "Chavez" not in text and "2026-115" not in text  # ids only, no labels


def test_a_rerun_adds_nothing_twice_and_updates_attributes(cli, registry, tmp_path):
    home = tmp_path / "home"
    _import(cli, registry, home)
    manifest = registry / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("2026-115,", "2026-115,2026-04-01"))
    shutil.copy(MORE / "Hugo_Chavez_0003.jpg", registry / "Hugo Chavez" / "2.jpg")  # one new photo
    code, report, _ = _import(cli, registry, home)
    assert code == 1  # the faceless and broken files are still reported
    people = {p["folder"]: p for p in report["people"]}
    assert not any(p["created"] for p in report["people"]) and not report["gallery_created"]
    assert people["Colin Powell"]["already_enrolled"] == 2 and people["Colin Powell"]["enrolled"] == []
    assert people["Hugo Chavez"]["already_enrolled"] == 1 and len(people["Hugo Chavez"]["enrolled"]) == 1
    assert people["Hugo Chavez"]["attributes_updated"] and not people["Colin Powell"]["attributes_updated"]
    code, out, _ = cli("subject", "list", "--gallery", "missing", "--home", home, "--json")
    listed = json.loads(out)
    assert sorted((s["label"], s["faces"]) for s in listed) == [("Colin Powell", 2), ("H. Chavez", 2)]


def test_text_output_and_bad_trees_are_one_line(cli, registry, tmp_path):
    home = tmp_path / "home"
    code, out, _ = cli("subject", "import", registry, "--gallery", "missing", "--home", home)
    assert code == 1
    assert "2 people (2 new), 3 face(s) enrolled" in out
    assert "! no usable face: Colin Powell/landscape.png" in out and "! unreadable: Colin Powell/notes.jpg" in out

    (registry / "manifest.csv").write_text("folder,case\nNobody Here,1\n")
    code, out, err = cli("subject", "import", registry, "--gallery", "missing", "--home", home)
    assert code == 2 and "Nobody Here" in err and len(err.strip().splitlines()) == 1
    (registry / "manifest.csv").write_text("name,case\nx,1\n")
    code, out, err = cli("subject", "import", registry, "--gallery", "missing", "--home", home)
    assert code == 2 and "'folder'" in err
    code, out, err = cli("subject", "import", tmp_path / "nowhere", "--gallery", "missing", "--home", home)
    assert code == 2 and "not a folder" in err


def test_a_folder_upload_imports_the_same_way(registry, tmp_path, analyzer):
    """What an API route gets from a browser's folder upload (TOP/PERSON/photo names, bytes): the same
    people, labels and attributes as the folder on disk, through the same governed import."""
    from facesearch.governance import Governance
    from facesearch.governance.accounts import local_operator
    from facesearch.governance.subject_import import import_people, people_from_uploads, read_folder
    from facesearch.governance.subjects import SubjectGovernance
    from facesearch.services.engine import Engine

    files = sorted((f"registry/{p.relative_to(registry).as_posix()}", p.read_bytes())
                   for p in registry.rglob("*") if p.is_file())
    files.append(("registry/Colin Powell/deeper/x.jpg", b"nested"))
    people, ignored = people_from_uploads(files)
    on_disk, _ = read_folder(registry)
    assert [(p.folder, p.label, p.attributes, [n for n, _ in p.photos]) for p in people] == \
        [(p.folder, p.label, p.attributes, [n for n, _ in p.photos]) for p in on_disk]
    assert sorted(ignored) == ["Colin Powell/deeper/x.jpg", "README.txt"]

    opened = Engine.open(tmp_path / "home", backend="faiss")
    engine = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
    try:
        sg = SubjectGovernance(Governance(engine))
        report = import_people(sg, local_operator(), "missing", people, ignored)
        summary = report.to_dict()["summary"]
        assert (summary["people"], summary["enrolled"], summary["no_face"], summary["unreadable"]) == (2, 3, 1, 1)
        again = import_people(sg, local_operator(), "missing", people_from_uploads(files)[0])
        assert again.to_dict()["summary"]["already_enrolled"] == 3 and again.problems == 2
    finally:
        engine.close()


def test_api_imports_a_folder_upload(api_fresh_env, registry):
    """POST /api/galleries/{name}/import: the browser's folder upload, the same report as the CLI."""
    env = api_fresh_env(layout={"alpha": []})
    ivy = env.as_user("api_ivy")
    uploads = sorted(p for p in registry.rglob("*") if p.is_file())
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in uploads]
    paths = {"paths": [f"registry/{p.relative_to(registry).as_posix()}" for p in uploads]}
    done = ivy.post("/api/galleries/missing/import", files=files, data=paths)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["summary"] == {"people": 2, "created": 2, "enrolled": 3, "already_enrolled": 0, "no_face": 1,
                               "unreadable": 1, "suppressed": 0}
    assert {p["label"] for p in body["people"]} == {"Colin Powell", "H. Chavez"}
    again = ivy.post("/api/galleries/missing/import", files=files, data=paths).json()
    assert again["summary"]["already_enrolled"] == 3 and again["summary"]["created"] == 0
    bad = ivy.post("/api/galleries/missing/import", files=files[:1], data={"paths": ["loose.jpg"]})
    assert bad.status_code == 400 and "no person folders" in bad.json()["detail"]
    # subjects are not the auditors' to see or change
    assert env.as_user("api_audrey").post("/api/galleries/missing/import", files=files, data=paths).status_code == 403
