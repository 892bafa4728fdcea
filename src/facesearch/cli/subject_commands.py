"""``facesearch subject ...`` and ``facesearch match``: galleries of enrolled people from the command line.

The CLI acts as the local operator (whoever can read the home's files), as an admin named
``local:<login>``; unlike ``search``, subject searches and gallery matches go through the
governance layer all the same: they need ``--purpose`` and ``--case`` and are written to
the audit log, and opted-out people are suppressed.
"""

from __future__ import annotations

from argparse import Namespace
from dataclasses import asdict
from pathlib import Path

from facesearch.cli.common import action_adder, operator_command, print_json
from facesearch.errors import FacesearchError
from facesearch.governance import UserInfo
from facesearch.governance.subjects import SubjectGovernance
from facesearch.search.subjects import DEFAULT_FUSION, FUSIONS


def add_subject_commands(sub, home_args) -> None:
    """Register ``subject`` (with its actions) and ``match`` on the top-level subparsers."""
    p = sub.add_parser("subject", help="people enrolled in galleries: add, enroll, list, show, search, remove")
    actions = p.add_subparsers(metavar="ACTION")

    action = action_adder(actions, home_args)

    def justification(a) -> None:
        a.add_argument("--purpose", required=True, help="why this search is made (audited)")
        a.add_argument("--case", dest="case_ref", required=True, help="case reference (audited)")
        a.add_argument("--fusion", choices=FUSIONS, default=None,
                       help=f"how a subject's faces are combined (default: {DEFAULT_FUSION}, the more accurate on LFW)")

    a = action("add", "add a named or numbered person to a gallery (created if missing)", subject_add)
    a.add_argument("label", metavar="NAME", help="a name or a number")
    a.add_argument("--gallery", required=True, help="the registry the person belongs to")
    a.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE",
                   help="free-form attribute (case id, last seen, family contact); kept in the catalog, never logged")

    a = action("enroll", "enrol the face of each photo (or of indexed faces) for a subject", subject_enroll)
    a.add_argument("subject", metavar="SUBJECT", help="subject id, or its label")
    a.add_argument("photos", nargs="*", type=Path, metavar="PHOTO")
    a.add_argument("--gallery", default=None, help="where to look the label up")
    a.add_argument("--face", type=int, default=None, help="enrol face N of each photo (default: the primary one)")
    a.add_argument("--from-face", type=int, action="append", default=[], metavar="ID",
                   help="enrol a face already indexed in a collection (repeatable)")

    a = action("import", "enrol a registry: one folder per person (its name is the label), optional "
               "manifest.csv or subjects.json with attributes; re-running adds only what is new", subject_import)
    a.add_argument("directory", type=Path, metavar="DIR")
    a.add_argument("--gallery", required=True, help="the registry the people belong to (created if missing)")

    a = action("list", "subjects, by gallery", subject_list)
    a.add_argument("--gallery", default=None)

    a = action("show", "one subject: attributes, enrolled faces, confirmed matches, decisions", subject_show)
    a.add_argument("subject", metavar="SUBJECT")
    a.add_argument("--gallery", default=None)

    a = action("remove", "remove a subject with its enrolled embeddings and thumbnails", subject_remove)
    a.add_argument("subject", metavar="SUBJECT")
    a.add_argument("--gallery", default=None)
    a.add_argument("--reason", default="", help="recorded in the audit log")

    a = action("search", "where does this subject appear in the collections?", subject_search)
    a.add_argument("subject", metavar="SUBJECT")
    a.add_argument("--gallery", default=None)
    a.add_argument("--collection", action="append", default=[], help="search only these (repeatable)")
    a.add_argument("--top-k", type=int, default=20)
    justification(a)

    a = action("identify", "is the person in this photo one of the subjects?", subject_identify)
    a.add_argument("probe", type=Path)
    a.add_argument("--gallery", action="append", default=[], help="only these galleries (repeatable)")
    a.add_argument("--top-k", type=int, default=10)
    a.add_argument("--face", type=int, default=None, help="use face N of the probe photo")
    justification(a)

    a = action("decide", "confirm or reject a candidate match (audited)", subject_decide)
    a.add_argument("subject", metavar="SUBJECT")
    a.add_argument("decision", choices=["confirm", "reject"])
    target = a.add_mutually_exclusive_group(required=True)
    target.add_argument("--face", type=int, metavar="ID", help="an indexed face")
    target.add_argument("--subject", dest="other", type=int, metavar="ID", help="a subject of another gallery")
    a.add_argument("--gallery", default=None)
    a.add_argument("--score", type=float, default=None)
    a.add_argument("--note", default="", help="why (recorded in the audit log)")

    a = action("galleries", "list galleries, or create or remove one", subject_galleries)
    a.add_argument("--create", metavar="NAME", default=None)
    a.add_argument("--description", default="")
    a.add_argument("--remove", metavar="NAME", default=None,
                   help="remove the gallery with all its subjects, enrolled faces and thumbnails")
    a.add_argument("--reason", default="", help="with --remove: recorded in the audit log")

    p = sub.add_parser("match", help="match two galleries: ranked candidate pairs of subjects (audited)")
    home_args(p)
    p.add_argument("gallery_a")
    p.add_argument("gallery_b")
    p.add_argument("--top", type=int, default=50, help="at most this many pairs")
    justification(p)
    p.set_defaults(handler=match)


# -- helpers ---------------------------------------------------------------------------------------------



def _attributes(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise FacesearchError(f"--attr {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


_run = operator_command(SubjectGovernance)


def _resolve(sg: SubjectGovernance, args: Namespace, ref: str | None = None):
    return sg.subjects.resolve(ref if ref is not None else args.subject, getattr(args, "gallery", None))


# -- handlers --------------------------------------------------------------------------------------------


@_run
def subject_add(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    created = False
    try:
        sg.subjects.gallery(args.gallery)
    except FacesearchError:
        sg.create_gallery(actor, args.gallery)
        created = True
    info = sg.add_subject(actor, args.gallery, args.label, _attributes(args.attr))
    if args.json:
        print_json(asdict(info))
        return 0
    print(f"added subject {info.id} {info.label!r} to gallery {info.gallery!r}"
          + (" (gallery created)" if created else ""))
    print(f"  next: facesearch subject enroll {info.id} PHOTO...")
    return 0


@_run
def subject_enroll(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    if not args.photos and not args.from_face:
        raise FacesearchError("give photos to enrol, or --from-face ID")
    info = _resolve(sg, args)
    reports = []
    if args.photos:
        reports.append(sg.enroll(actor, info.id, [(str(p), p) for p in args.photos], face_index=args.face))
    if args.from_face:
        reports.append(sg.enroll_faces(actor, info.id, args.from_face))
    now = sg.subjects.subject(info.id)
    if args.json:
        print_json({"subject": asdict(now), "reports": [asdict(r) for r in reports]})
    else:
        added = sum(len(r.added) for r in reports)
        print(f"enrolled {added} face(s) for subject {now.id} {now.label!r}; it has {now.faces} now")
        for r in reports:
            for face in r.added:
                print(f"  + enrolled face {face.id}: {face.source}, quality {face.quality:.2f}")
            for name, why in r.failed:
                print(f"  ! {name}: {why}")
            for warning in r.warnings:
                print(f"  WARNING {warning}")
            if r.suppressed:
                print(f"  {r.suppressed} face(s) not enrolled: they match an opt-out request")
    failed = sum(len(r.failed) for r in reports)
    return 0 if failed == 0 else 1


@_run
def subject_import(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    """Folder-per-person import through the same governed, audited calls as one-by-one enrolment."""
    from facesearch.governance.subject_import import import_people, read_folder

    people, ignored = read_folder(args.directory)
    report = import_people(sg, actor, args.gallery, people, ignored)
    data = report.to_dict()
    if args.json:
        print_json(data)
        return 0 if report.problems == 0 else 1
    total = data["summary"]
    print(f"gallery {report.gallery!r}{' (created)' if report.gallery_created else ''}: {total['people']} people "
          f"({total['created']} new), {total['enrolled']} face(s) enrolled, {total['already_enrolled']} photo(s) "
          f"enrolled before, {total['no_face']} without a usable face, {total['unreadable']} unreadable")
    for p in report.people:
        state = "new" if p.created else "found again" + (", attributes updated" if p.attributes_updated else "")
        print(f"  {p.label!r} (subject {p.subject_id}, {state}): {len(p.enrolled)} enrolled"
              + (f", {p.already_enrolled} before" if p.already_enrolled else ""))
        for name, why in p.no_face:
            print(f"    ! no usable face: {name}: {why}")
        for name, why in p.unreadable:
            print(f"    ! unreadable: {name}: {why}")
        if p.suppressed:
            print(f"    {p.suppressed} face(s) not enrolled: they match an opt-out request")
        for warning in p.warnings:
            print(f"    WARNING {warning}")
    for name in report.ignored:
        print(f"  ignored {name}: not in a person folder")
    return 0 if report.problems == 0 else 1


@_run
def subject_list(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    rows = sg.list_subjects(actor, args.gallery)
    if args.json:
        print_json([asdict(s) for s in rows])
        return 0
    if not rows:
        print("no subjects yet: `facesearch subject add NAME --gallery G` adds one")
    for s in rows:
        print(f"{s.id:>6}  {s.gallery:<20} {s.label:<30} {s.faces} face(s)")
    return 0


@_run
def subject_show(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    info = sg.subject(actor, _resolve(sg, args).id)
    faces = sg.subjects.faces(info.id)
    links = sg.subjects.links(info.id)
    decisions = sg.decisions(actor, info.id)
    if args.json:
        print_json({"subject": asdict(info), "faces": [asdict(f) for f in faces],
               "links": [{"kind": k, "id": i, **asdict(d)} for (k, i), d in sorted(links.items())],
               "decisions": [asdict(d) for d in decisions]})
        return 0
    print(f"subject {info.id} {info.label!r} in gallery {info.gallery!r}; added by {info.created_by} "
          f"at {info.created_at}")
    for key, value in sorted(info.attributes.items()):
        print(f"  {key}: {value}")
    print(f"enrolled faces: {len(faces)}")
    for f in faces:
        origin = f" (indexed face {f.face_id})" if f.face_id is not None else ""
        print(f"  {f.id:>6}  {f.source}{origin}  quality {f.quality:.2f}"
              + (f" ({', '.join(f.quality_issues)})" if f.quality_issues else ""))
    print(f"confirmed matches: {len(links)}")
    for (kind, target), d in sorted(links.items()):
        print(f"  {kind} {target}: confirmed by {d.decided_by} at {d.decided_at}"
              + (f", score {d.score:.3f}" if d.score is not None else "") + (f" — {d.note}" if d.note else ""))
    if decisions:
        print(f"decisions: {len(decisions)} (newest last)")
        for d in decisions:
            target = f"face {d.face_id}" if d.face_id is not None else f"subjects {d.subject_id}/{d.other_subject_id}"
            print(f"  {d.decided_at}  {d.decision:<8} {target}  by {d.decided_by}")
    return 0


@_run
def subject_remove(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    info = _resolve(sg, args)
    removal = sg.remove(actor, info.id, args.reason)
    if args.json:
        print_json(asdict(removal))
        return 0
    print(f"removed subject {info.id} {info.label!r}: {len(removal.faces)} enrolled face(s) and their embeddings, "
          f"{removal.thumbnails_deleted} thumbnail(s) deleted; attributes and decisions gone with it")
    return 0


@_run
def subject_search(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    from facesearch.cli.engine_commands import print_result

    info = _resolve(sg, args)
    result = sg.search(actor, info.id, purpose=args.purpose, case_ref=args.case_ref,
                       collections=args.collection or None, top_k=args.top_k, fusion=args.fusion)
    if args.json:
        print_json({"subject_id": info.id, "fusion": args.fusion or DEFAULT_FUSION} | result.to_dict())
        return 0
    print(f"subject {info.id} {info.label!r} ({info.gallery}), fusion {args.fusion or DEFAULT_FUSION}")
    print_result(result)
    return 0


@_run
def subject_identify(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    result = sg.identify(actor, args.probe.read_bytes(), purpose=args.purpose, case_ref=args.case_ref,
                         galleries=args.gallery or None, top_k=args.top_k, fusion=args.fusion,
                         face_index=args.face, probe_name=str(args.probe))
    if args.json:
        print_json(result.to_dict())
        return 0
    if result.probe:
        print(f"probe {result.probe.source}: {result.probe.rule}; quality {result.probe.quality:.2f}")
    for warning in result.warnings:
        print(f"WARNING {warning}")
    print(f"compared with {result.subjects_searched:,} subject(s) in {', '.join(result.galleries) or 'no gallery'} "
          f"({result.fusion} fusion)")
    print(result.threshold_rule)
    print("Candidate subjects above the threshold; each needs human review." if result.confident
          else "NO CONFIDENT MATCH: no subject scores above the threshold.")
    for c in result.candidates:
        print(f"  #{c.rank:<3} subject {c.subject_id:<6} {c.similarity:.4f} {'ABOVE' if c.above_threshold else 'below'}"
              f"  {c.label} ({c.gallery}, {c.faces} face(s))")
        if c.false_match:
            print(f"        {c.false_match.words}")
    return 0


@_run
def subject_decide(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    info = _resolve(sg, args)
    decision = sg.decide(actor, info.id, args.decision, face_id=args.face, other_subject_id=args.other,
                         score=args.score, note=args.note)
    if args.json:
        print_json(asdict(decision))
        return 0
    target = f"face {args.face}" if args.face is not None else f"subject {args.other}"
    print(f"recorded: {args.decision} subject {info.id} {info.label!r} = {target} (decision {decision.id}, audited)")
    return 0


@_run
def subject_galleries(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    if args.create:
        info = sg.create_gallery(actor, args.create, args.description)
        print(f"created gallery {info.name!r} (id {info.id})")
        return 0
    if args.remove:
        removal = sg.remove_gallery(actor, args.remove, args.reason)
        print(f"removed gallery {args.remove!r}: {len(removal.subjects)} subject(s), {len(removal.faces)} enrolled "
              f"face(s), {removal.thumbnails_deleted} thumbnail(s) deleted")
        return 0
    rows = sg.galleries(actor)
    if args.json:
        print_json([asdict(g) for g in rows])
        return 0
    if not rows:
        print("no galleries yet")
    for g in rows:
        print(f"{g.name}: {g.subjects} subject(s), {g.faces} enrolled face(s), pack {g.pack}"
              + (f"; {g.description}" if g.description else ""))
    return 0


@_run
def match(args: Namespace, sg: SubjectGovernance, actor: UserInfo) -> int:
    result = sg.match(actor, args.gallery_a, args.gallery_b, purpose=args.purpose, case_ref=args.case_ref,
                      top=args.top, fusion=args.fusion)
    if args.json:
        print_json(result.to_dict())
        return 0
    print(f"{result.gallery_a} ({result.subjects_a} subjects) x {result.gallery_b} ({result.subjects_b} subjects): "
          f"{result.pairs_compared:,} pairs compared, {result.fusion} fusion")
    print(result.threshold_rule)
    for warning in result.warnings:
        print(f"  {warning}")
    if result.pairs:
        print("Candidate pairs above the threshold, best first; each needs human review "
              "(`facesearch subject decide A confirm --subject B`):")
    for p in result.pairs:
        print(f"  #{p.rank:<3} {p.similarity:.4f}  subject {p.subject_a} {p.label_a!r}  <->  subject {p.subject_b} "
              f"{p.label_b!r}")
        if p.false_match:
            print(f"        {p.false_match.words}")
    return 0


__all__ = ["add_subject_commands"]
