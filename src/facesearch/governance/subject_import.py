"""Bulk enrolment of a registry: one folder per person, the folder's name is the person's label.

    DIR/
      manifest.csv        optional: a ``folder`` column (the folder's name), an optional ``label``
                          column (a label other than the folder's name) and any attribute columns
      subjects.json       optional, instead: {"Folder name": {"label": ..., "case": "2026-114", ...}}
      Person 17/a.jpg b.jpg ...
      Person 18/...

Each person goes through the same governed calls as the web app's one-by-one enrolment
(:class:`SubjectGovernance`: ``add_subject`` and ``enroll``, each audited), and the import as a
whole is one more audit record (counts and ids, never labels or attributes). A re-run is
idempotent: a person is found again by label in the gallery (attributes from the manifest are
updated when they changed) and a photo already enrolled for them is skipped without decoding.
Photos without a usable face and files that do not decode are reported per person.

:func:`read_folder` turns DIR into :class:`PersonPhotos`; an API route that receives uploads
builds the same list and calls :func:`import_people`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from facesearch.catalog import CatalogError
from facesearch.errors import FacesearchError
from facesearch.governance.accounts import UserInfo
from facesearch.governance.subjects import SubjectGovernance

MANIFESTS = ("manifest.csv", "subjects.json")
#: Bounds of one import (a registry, not a photo library): beyond them, split the tree.
MAX_PEOPLE = 10_000
MAX_PHOTOS_PER_PERSON = 200
MAX_PHOTO_BYTES = 50 * 2**20


class SubjectImportError(FacesearchError):
    """The folder or its manifest cannot be imported as it is (the message says what to fix)."""


@dataclass
class PersonPhotos:
    """One person to import: label, attributes, and their photos as (name shown, path or bytes)."""

    folder: str
    label: str
    attributes: dict[str, str] = field(default_factory=dict)
    photos: list[tuple[str, Path | bytes]] = field(default_factory=list)


@dataclass
class PersonReport:
    folder: str
    label: str
    subject_id: int
    created: bool  # a new subject (else found by label in the gallery: a re-run)
    enrolled: list[int] = field(default_factory=list)  # new enrolled face ids
    already_enrolled: int = 0  # photos enrolled for this person before: skipped
    no_face: list[list[str]] = field(default_factory=list)  # [photo, why]: decoded, but no usable face
    unreadable: list[list[str]] = field(default_factory=list)  # [file, why]: not a photo we can decode
    suppressed: int = 0  # faces matching an opt-out request: never enrolled
    warnings: list[str] = field(default_factory=list)
    attributes_updated: bool = False


@dataclass
class ImportReport:
    gallery: str
    gallery_created: bool
    people: list[PersonReport] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files beside the person folders (not the manifest)

    @property
    def problems(self) -> int:
        """Photos that were not enrolled for a reason the user should look at."""
        return sum(len(p.no_face) + len(p.unreadable) for p in self.people)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        out = asdict(self)
        out["summary"] = {
            "people": len(self.people), "created": sum(p.created for p in self.people),
            "enrolled": sum(len(p.enrolled) for p in self.people),
            "already_enrolled": sum(p.already_enrolled for p in self.people),
            "no_face": sum(len(p.no_face) for p in self.people),
            "unreadable": sum(len(p.unreadable) for p in self.people),
            "suppressed": sum(p.suppressed for p in self.people)}
        return out


def _manifest(root: Path) -> dict[str, dict[str, str]]:
    """folder name -> {"label"?: ..., attribute: value}, from manifest.csv or subjects.json."""
    found = [root / name for name in MANIFESTS if (root / name).is_file()]
    if len(found) > 1:
        raise SubjectImportError(f"{root}: both {MANIFESTS[0]} and {MANIFESTS[1]}: keep one")
    if not found:
        return {}
    try:
        return parse_manifest(str(found[0]), found[0].read_bytes())
    except OSError as exc:
        raise SubjectImportError(f"{found[0]}: cannot read ({exc.strerror or exc})") from None


def parse_manifest(name: str, data: bytes) -> dict[str, dict[str, str]]:
    """A manifest's content (CSV with a 'folder' column, or JSON folder -> attributes) as a mapping."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SubjectImportError(f"{name}: not UTF-8 text") from None
    out: dict[str, dict[str, str]] = {}
    if name.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or "folder" not in reader.fieldnames:
            raise SubjectImportError(f"{name}: the first line must name the columns, one of them 'folder'")
        for line, row in enumerate(reader, start=2):
            folder = (row.pop("folder") or "").strip()
            if not folder:
                raise SubjectImportError(f"{name}:{line}: empty 'folder'")
            out[folder] = {str(k).strip(): (v or "").strip() for k, v in row.items()
                           if k and isinstance(v, str) and v.strip()}
        return out
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubjectImportError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise SubjectImportError(f"{name}: expected an object: folder name -> {{attribute: value}}")
    return {str(k): {str(a): str(v) for a, v in attrs.items()} for k, attrs in parsed.items()}


def _people(where: str, folders: dict[str, list[tuple[str, Path | bytes]]],
            manifest: dict[str, dict[str, str]]) -> list[PersonPhotos]:
    """Person folders (name -> files) and the manifest, checked, as the people to import."""
    people = []
    for folder in sorted(folders):
        files = folders[folder]
        if len(files) > MAX_PHOTOS_PER_PERSON:
            raise SubjectImportError(f"{where}/{folder}: {len(files)} files; at most {MAX_PHOTOS_PER_PERSON} "
                                     "photos per person")
        attrs = dict(manifest.get(folder, {}))
        label = attrs.pop("label", "").strip() or folder
        people.append(PersonPhotos(folder, label, attrs, sorted(files, key=lambda f: f[0])))
    unknown = sorted(set(manifest) - set(folders))
    if unknown:
        raise SubjectImportError(f"{where}: the manifest names folder(s) that are not there: {', '.join(unknown[:5])}")
    if not people:
        raise SubjectImportError(f"{where}: no person folders (expected DIR/NAME/photo.jpg ...)")
    if len(people) > MAX_PEOPLE:
        raise SubjectImportError(f"{where}: {len(people)} people; at most {MAX_PEOPLE} per import")
    return people


def read_folder(root: Path) -> tuple[list[PersonPhotos], list[str]]:
    """The people of a folder-per-person tree (sorted by folder), and the loose files beside them."""
    root = Path(root)
    if not root.is_dir():
        raise SubjectImportError(f"{root}: not a folder (expected one folder per person inside it)")
    manifest = _manifest(root)
    folders: dict[str, list[tuple[str, Path | bytes]]] = {}
    ignored = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.name not in MANIFESTS:
                ignored.append(entry.name)
        elif entry.is_dir():
            folders[entry.name] = [(f"{entry.name}/{p.name}", p) for p in sorted(entry.iterdir())
                                   if p.is_file() and not p.name.startswith(".")]
    return _people(str(root), folders, manifest), ignored


def people_from_uploads(files: list[tuple[str, bytes]]) -> tuple[list[PersonPhotos], list[str]]:
    """The same from an upload of a folder: (relative path as the browser names it, content).

    A browser's folder upload names files TOP/PERSON/photo.jpg: the common top folder is dropped.
    A manifest is a top-level file; anything deeper than PERSON/photo is ignored (and said so)."""
    paths = [PurePosixPath(name.replace("\\", "/")).parts for name, _ in files]
    if paths and len({p[0] for p in paths}) == 1 and all(len(p) >= 2 for p in paths) \
            and any(len(p) >= 3 for p in paths):
        paths = [p[1:] for p in paths]
    folders: dict[str, list[tuple[str, Path | bytes]]] = {}
    manifests, ignored = [], []
    for parts, (_, data) in zip(paths, files):
        if any(part.startswith(".") or part == ".." for part in parts):
            continue
        if len(parts) == 1 and parts[0] in MANIFESTS:
            manifests.append((parts[0], data))
        elif len(parts) == 2:
            folders.setdefault(parts[0], []).append(("/".join(parts), data))
        else:
            ignored.append("/".join(parts))
    if len(manifests) > 1:
        raise SubjectImportError(f"both {MANIFESTS[0]} and {MANIFESTS[1]}: keep one")
    manifest = parse_manifest(*manifests[0]) if manifests else {}
    return _people("upload", folders, manifest), ignored


def _bytes(photo: Path | bytes) -> bytes | str:
    """The photo's bytes, or why they cannot be read."""
    if isinstance(photo, bytes):
        return photo if len(photo) <= MAX_PHOTO_BYTES else f"larger than {MAX_PHOTO_BYTES // 2**20} MB"
    try:
        if photo.stat().st_size > MAX_PHOTO_BYTES:
            return f"larger than {MAX_PHOTO_BYTES // 2**20} MB"
        return photo.read_bytes()
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"


def import_people(sg: SubjectGovernance, actor: UserInfo, gallery: str, people: list[PersonPhotos],
                  ignored: list[str] | None = None) -> ImportReport:
    """Add (or find again) each person in ``gallery`` and enrol the faces of their photos; audited."""
    gallery = (gallery or "").strip()
    if not gallery:
        raise SubjectImportError("a gallery is needed (--gallery NAME)")
    try:
        sg.subjects.gallery(gallery)
        created_gallery = False
    except CatalogError:
        sg.create_gallery(actor, gallery)
        created_gallery = True
    report = ImportReport(gallery, created_gallery, ignored=list(ignored or []))
    existing = {s.label: s for s in sg.list_subjects(actor, gallery)}
    for person in people:
        report.people.append(_import_person(sg, actor, gallery, person, existing.get(person.label)))
    summary = report.to_dict()["summary"]
    sg.audit.append(actor.username, "subject_import", {
        "gallery": gallery, "subject_ids": [p.subject_id for p in report.people],
        **summary})
    return report


def _import_person(sg: SubjectGovernance, actor: UserInfo, gallery: str, person: PersonPhotos,
                   subject) -> PersonReport:
    created = subject is None
    if created:
        subject = sg.add_subject(actor, gallery, person.label, person.attributes)
    out = PersonReport(person.folder, person.label, subject.id, created)
    if not created and person.attributes and {**subject.attributes, **person.attributes} != subject.attributes:
        sg.update_attributes(actor, subject.id, {**subject.attributes, **person.attributes})
        out.attributes_updated = True
    known = {f.sha256 for f in sg.subjects.faces(subject.id) if f.sha256}
    todo: list[tuple[str, bytes]] = []
    for name, photo in person.photos:
        data = _bytes(photo)
        if isinstance(data, str):
            out.unreadable.append([name, data])
        elif (digest := hashlib.sha256(data).hexdigest()) in known:
            out.already_enrolled += 1  # a re-run (or the same file twice): not decoded again
        else:
            known.add(digest)
            todo.append((name, data))
    if todo:
        enrolled = sg.enroll(actor, subject.id, todo)
        out.enrolled = [f.id for f in enrolled.added]
        out.suppressed, out.warnings = enrolled.suppressed, list(enrolled.warnings)
        unreadable = set(enrolled.unreadable)
        for name, why in enrolled.failed:
            (out.unreadable if name in unreadable else out.no_face).append([name, why])
    return out
