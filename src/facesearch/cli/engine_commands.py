"""Handlers of the subcommands that work on a facesearch home (index, search, erase, ...).

Searching, ingesting and erasing go through the governance layer as the local operator
(``local:<login>``, an admin: whoever can read the home's files): a search needs
``--purpose`` and ``--case`` and every one of these actions lands in the audit log, as it
does through the server.
"""

from __future__ import annotations

import sys
from argparse import Namespace
from contextlib import ExitStack
from dataclasses import asdict

from facesearch.cli.common import governed, opened_engine, print_json, read_probe
from facesearch.governance import Governance, local_operator
from facesearch.search import SearchResult


def collections(args: Namespace) -> int:
    with governed(args) as gov:
        engine = gov.engine
        if args.create:  # recorded in the audit log, as through the server
            info = gov.create_collection(local_operator(), args.create, args.legal_basis or "", args.retention_days,
                                         not args.no_thumbnails)
            print(f"created collection {info.name!r} (id {info.id})")
            return 0
        rows = gov.collections(local_operator())
        if args.json:
            print_json([asdict(c) for c in rows])
            return 0
        if not rows:
            print(f"no collections in {engine.home} yet: `facesearch index PATH --collection NAME` creates one")
        for c in rows:
            basis = c.legal_basis or "no legal basis recorded"
            print(f"{c.name}: {c.images} images, {c.faces} faces, pack {c.pack}, "
                  f"thumbnails {'kept' if c.keep_thumbnails else 'not kept'}; {basis}")
    return 0


def index(args: Namespace) -> int:
    options, extra = {}, {}
    with ExitStack() as stack:
        if getattr(args, "ray", None):  # detection and embedding on Ray actors; the rest as below
            from facesearch.ingest.distributed import RayAnalyzer, ray_cluster

            stack.enter_context(ray_cluster(args.ray))
            engine = stack.enter_context(opened_engine(args))
            analyzer = RayAnalyzer(engine.config.pack)
            engine.use_analyzer(analyzer)
            options["batch_images"] = analyzer.batch_images
            extra["ray"] = {"address": args.ray, "actors": analyzer.actors, "nodes": analyzer.nodes()}
        else:
            engine = stack.enter_context(opened_engine(args))
            engine.load_analyzer_in_background()  # compiling the models overlaps the catalog and the walk
        summary = Governance(engine).ingest(local_operator(), args.paths, args.collection, workers=args.workers,
                                            progress=not args.json, wait=not args.no_wait,
                                            on_wait=lambda msg: print(msg, file=sys.stderr),
                                            min_face_px=args.min_face, video_fps=args.video_fps,
                                            allow_erased=args.allow_erased, **options)
    if args.json:
        print_json(asdict(summary) | {"images_per_s": summary.images_per_s, "faces_per_s": summary.faces_per_s}
                   | extra)
        return 0
    s = summary
    print(f"collection {s.collection}: {s.files_seen} files in {s.seconds:.1f} s "
          f"({s.images_per_s:.1f} images/s, {s.faces_per_s:.1f} faces/s)")
    videos = f"{s.videos_indexed} videos ({s.video_tracks} face tracks), " if s.videos_indexed else ""
    print(f"  indexed   {s.images_indexed} images, {videos}{s.faces_indexed} faces "
          f"({s.images_without_faces} images without a face)")
    print(f"  skipped   {s.already_indexed} already indexed, {s.duplicates_in_run} duplicate files, "
          f"{s.faces_too_small} faces smaller than {args.min_face:g} px, {s.faces_suppressed} suppressed (opt-out), "
          f"{s.erased_earlier} erased earlier")
    if s.erased_earlier:
        print(f"  skipped {s.erased_earlier} erased earlier: not indexed again (an admin may allow it with "
              "--allow-erased; audited)")
    if s.erased_readmitted:
        print(f"  readmitted {s.erased_readmitted} erased earlier (--allow-erased; recorded in the audit log)")
    print(f"  not images {len(s.skipped)}, failed {len(s.failed)}")
    for path, reason in (s.skipped + s.failed)[:20]:
        print(f"    {path}: {reason}")
    if len(s.skipped) + len(s.failed) > 20:
        print(f"    ... {len(s.skipped) + len(s.failed) - 20} more in the ingest journal (run {s.run_id})")
    return 0


def print_result(result: SearchResult) -> None:
    if result.probe:
        p = result.probe
        print(f"probe {p.source}: {p.rule}; quality {p.quality:.2f}"
              + (f" ({', '.join(p.quality_issues)})" if p.quality_issues else ""))
    for warning in result.warnings:
        print(f"WARNING {warning}")
    print(f"searched {result.faces_searched:,} faces in {', '.join(result.collections) or 'no collection'}")
    print(f"{result.threshold_rule}")
    if not result.confident:
        print("NO CONFIDENT MATCH: no candidate scores above the threshold."
              + (" Below-threshold candidates follow, as asked; treat them as unrelated unless other evidence "
                 "says otherwise." if result.candidates else ""))
    else:
        print("Candidate leads above the threshold. Each needs human review; a score is not an identification.")
    if result.weaker_withheld:
        print(f"{result.weaker_withheld} weaker candidate(s) below the threshold not shown "
              "(--include-weaker shows them; the asking is recorded)")
    for c in result.candidates:
        mark = "ABOVE" if c.above_threshold else "below"
        x1, y1, x2, y2 = c.box
        when = ""
        if c.timestamp_s is not None:
            span = f", on screen {format_time(c.track_span[0])}-{format_time(c.track_span[1])}" if c.track_span else ""
            frames = (f"; best of {c.track_hits} matching frame(s), {len(c.track_faces)} in the track"
                      if c.track_faces else "")
            when = f" at {format_time(c.timestamp_s)} (track {c.track_id}{span}{frames})"
        print(f"  #{c.rank:<3} face {c.face_id:<7} {c.similarity:.4f} {mark}  {c.image_source}{when} "
              f"[{x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}]  ({c.collection})")
        if c.false_match:
            print(f"        {c.false_match.words}")
        if c.thumbnail:
            print(f"        thumbnail {c.thumbnail}")


def format_time(seconds: float) -> str:
    """Video time as m:ss.s (h:mm:ss.s past an hour)."""
    minutes, sec = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{sec:04.1f}" if hours else f"{minutes}:{sec:04.1f}"


def _show(args: Namespace, result: SearchResult) -> int:
    if args.json:
        print_json(result.to_dict())
    else:
        print_result(result)
    return 0


def search(args: Namespace) -> int:
    probe = read_probe(args.probe)
    with governed(args) as gov:
        return _show(args, gov.search(local_operator(), probe, purpose=args.purpose, case_ref=args.case,
                                      collections=args.collection or None, top_k=args.top_k, face_index=args.face,
                                      probe_name=str(args.probe), threshold=args.threshold,
                                      include_weaker=args.include_weaker))


def similar(args: Namespace) -> int:
    with governed(args) as gov:
        return _show(args, gov.similar(local_operator(), args.face_id, purpose=args.purpose, case_ref=args.case,
                                       collections=args.collection or None, top_k=args.top_k,
                                       include_weaker=args.include_weaker))


def erase(args: Namespace) -> int:
    if args.like and args.min_score is None:
        print("facesearch: error: --like needs --min-score (the lowest similarity to erase)", file=sys.stderr)
        return 2
    with governed(args) as gov:
        report = gov.erase(local_operator(), faces=args.face, images=args.image, collection=args.collection,
                           like=read_probe(args.like) if args.like else None, min_score=args.min_score,
                           reason=args.reason, probe_face=args.probe_face)
    if args.json:
        print_json(asdict(report))
        return 0
    print(f"erased {len(report.faces)} face(s) {report.faces[:50]}{' ...' if len(report.faces) > 50 else ''}")
    print(f"  images removed: {len(report.images)} {report.images[:50]}")
    print(f"  thumbnails deleted: {report.thumbnails_deleted}")
    if report.collections:
        print(f"  collections removed: {', '.join(report.collections)}")
    print("  vectors removed from the index; catalog rows deleted; the next search cannot return them")
    return 0


def doctor(args: Namespace) -> int:
    from facesearch.home import check_permissions

    with opened_engine(args) as engine:
        reports = engine.doctor(repair=not args.check_only)
        perms = check_permissions(engine.home, repair=not args.check_only)
    perms_ok = perms.ok or perms.fixed
    if args.json:
        rows = [asdict(r) | {"consistent": r.consistent} for r in reports]
        if not perms.ok:  # an entry of its own: the per-collection entries keep their shape
            rows.append({"collection": "(home permissions)", "consistent": False, "repaired": perms.fixed,
                         "loose_permissions": [list(p) for p in perms.loose]})
        print_json(rows)
        return 0 if all(r.consistent or r.repaired for r in reports) and perms_ok else 1
    if not perms.ok:
        state = "FIXED (now 0700/0600)" if perms.fixed else "WARNING: readable or writable by others"
        print(f"permissions: {len(perms.loose)} path(s) looser than directories 0700 / files 0600: {state}")
        for path, mode in perms.loose[:20]:
            print(f"    {mode}  {path}")
        if len(perms.loose) > 20:
            print(f"    ... {len(perms.loose) - 20} more")
        if not perms.fixed:
            print("  run `facesearch doctor` without --check-only to fix them")
    for r in reports:
        state = "consistent" if r.consistent else ("REPAIRED" if r.repaired else "INCONSISTENT")
        if r.unrepairable:
            state += f" ({r.unrepairable} thumbnail(s) cannot be cut again: source photo gone)"
        print(f"{r.collection}: {state}; catalog {r.catalog_faces} faces, index {r.index_faces}; "
              f"missing from index {r.missing_from_index}, orphans in index {r.orphans_in_index}, "
              f"orphan thumbnails {r.orphan_thumbnails}, missing thumbnails {r.missing_thumbnails}")
    if not reports:
        print("no collections")
    return 0 if all(r.consistent or r.repaired for r in reports) and perms_ok else 1
