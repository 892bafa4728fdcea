"""``facesearch cluster ...``: group a collection's faces into unknown identities, and correct the groups.

``facesearch cluster --collection NAME [--full]`` runs the clustering: the first run clusters
every face, later runs place only the faces added since (``--full`` re-clusters all). The
actions list, show, merge, split, move, unassign, name and turn a cluster into a subject;
``suggestions`` lists what the clustering would not decide alone ("clusters A and B may be one
person", "face F may belong to cluster N", with the calibrated evidence) and ``accept`` /
``reject`` answer one (``accept merge A B``, ``reject attach FACE CLUSTER``).

The CLI acts as the local operator (whoever can read the home's files), as an admin named
``local:<login>``; it goes through the governance layer all the same, so every run and edit
is written to the audit log and opted-out faces are neither clustered nor shown.
"""

from __future__ import annotations

from argparse import Namespace
from dataclasses import asdict

from facesearch.cli.common import action_adder, operator_command, print_json
from facesearch.errors import FacesearchError
from facesearch.governance import UserInfo
from facesearch.governance.clusters import ClusterGovernance


def add_cluster_commands(sub, home_args) -> None:
    """Register ``cluster`` (a run, or one of its actions) on the top-level subparsers."""
    p = sub.add_parser("cluster", help="group a collection's faces into unknown identities (incremental); "
                       "list, show, merge, split, move, unassign, name, to-subject, suggestions, accept, reject",
                       description="Without an action: cluster --collection NAME. Options of an action go after it.")
    home_args(p)
    p.add_argument("--collection", default=None, help="the collection to cluster")
    p.add_argument("--full", action="store_true", help="re-cluster every face (default: place only new faces)")
    p.set_defaults(handler=cluster_run)
    actions = p.add_subparsers(metavar="ACTION")

    action = action_adder(actions, home_args)

    a = action("list", "a collection's clusters, largest first, with their best faces", cluster_list)
    a.add_argument("--collection", required=True)
    a.add_argument("--limit", type=int, default=50, help="at most this many clusters (default 50)")
    a.add_argument("--samples", type=int, default=8, help="sample face ids per cluster (default 8)")

    a = action("show", "one cluster: its faces, best first", cluster_show)
    a.add_argument("cluster", type=int, metavar="ID")

    a = action("merge", "merge clusters of the same person into one", cluster_merge)
    a.add_argument("clusters", type=int, nargs="+", metavar="ID")
    a.add_argument("--into", type=int, default=None, help="the cluster to keep (default: the largest)")

    a = action("split", "take some faces of a cluster into a new cluster", cluster_split)
    a.add_argument("cluster", type=int, metavar="ID")
    a.add_argument("--face", type=int, action="append", required=True, metavar="FACE", help="repeatable")

    a = action("move", "move faces into a cluster (kept there by later runs)", cluster_move)
    a.add_argument("faces", type=int, nargs="+", metavar="FACE")
    a.add_argument("--to", type=int, required=True, metavar="ID", dest="target")

    a = action("unassign", "take faces out of their cluster (and out of later runs)", cluster_unassign)
    a.add_argument("faces", type=int, nargs="+", metavar="FACE")

    a = action("name", "name a cluster (an empty name clears it); the name is never logged", cluster_name)
    a.add_argument("cluster", type=int, metavar="ID")
    a.add_argument("name")

    a = action("to-subject", "make the cluster a subject of a gallery, enrolled from its best faces",
               cluster_to_subject)
    a.add_argument("cluster", type=int, metavar="ID")
    a.add_argument("--gallery", required=True, help="created if missing")
    a.add_argument("--label", default=None, help="the subject's name (default: the cluster's)")
    a.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE",
                   help="free-form attribute of the subject; kept in the catalog, never logged")

    a = action("suggestions", "clusters that may be one person and unassigned faces that may belong to a "
               "cluster, with the calibrated evidence", cluster_suggestions)
    a.add_argument("--collection", required=True)
    a.add_argument("--limit", type=int, default=20, help="at most this many of each kind (default 20)")
    for verb, handler, what in (("accept", cluster_accept, "merge the two clusters / move the face in (pinned)"),
                                ("reject", cluster_reject, "never suggest it again")):
        a = action(verb, f"{verb} a suggestion: {what} (audited)", handler)
        a.add_argument("kind", choices=("merge", "attach"))
        a.add_argument("first", type=int, metavar="A_OR_FACE", help="merge: a cluster id; attach: the face id")
        a.add_argument("second", type=int, metavar="B_OR_CLUSTER", help="merge: the other cluster; attach: the cluster")


# -- helpers ---------------------------------------------------------------------------------------------



_run = operator_command(ClusterGovernance)


def _title(cluster) -> str:
    return f"cluster {cluster.id}" + (f" {cluster.name!r}" if cluster.name else "")


def _seconds(value: float | None) -> str:
    return "-" if value is None else (f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s")


# -- handlers --------------------------------------------------------------------------------------------


@_run
def cluster_run(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    if not args.collection:
        raise FacesearchError("give --collection NAME, or an action (facesearch cluster --help)")
    run = cg.run(actor, args.collection, full=args.full)
    if args.json:
        print_json(run.to_dict())
        return 0
    print(f"clustered collection {run.collection!r}: {run.mode} run ({run.reason})")
    if run.mode == "incremental":
        print(f"  placed {run.faces_processed:,} new face(s): {len(run.new_clusters)} new cluster(s), "
              f"{len(run.grown)} grown, {len(run.merged)} merged")
    elif run.mode == "full":
        print(f"  clustered {run.faces_processed:,} face(s): {len(run.new_clusters)} new cluster(s), "
              f"{len(run.grown)} kept from before")
    if run.suppressed:
        print(f"  {run.suppressed} face(s) not clustered: they match an opt-out request")
    print(f"  {run.clusters:,} cluster(s); {run.in_clusters:,} of {run.faces:,} face(s) in clusters, "
          f"{run.unassigned:,} unassigned")
    print("  time: " + ", ".join(f"{k} {_seconds(v)}" for k, v in run.timings.items()))
    print(f"  parameters: {run.params}")
    if run.graph:
        print(f"  neighbours: {run.graph}")
    return 0


@_run
def cluster_list(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    o = cg.overview(actor, args.collection, limit=args.limit, samples=args.samples)
    if args.json:
        print_json(asdict(o))
        return 0
    last = (f"last run {o.state.mode} by {o.state.ran_by} at {o.state.ran_at}" if o.state
            else "never clustered: `facesearch cluster --collection NAME` runs it")
    print(f"{o.collection}: {o.total_clusters:,} cluster(s); {o.in_clusters:,} of {o.faces:,} face(s) in clusters, "
          f"{o.unassigned:,} unassigned; {last}")
    for c in o.clusters:
        extra = (f", subject {c.subject_id}" if c.subject_id else "") + (f", {c.pinned} pinned" if c.pinned else "")
        print(f"  {_title(c):<40} {c.size:>5} face(s){extra}  best: {' '.join(map(str, c.samples))}")
    if o.total_clusters > len(o.clusters):
        print(f"  ... {o.total_clusters - len(o.clusters)} smaller cluster(s) not listed (--limit)")
    return 0


@_run
def cluster_show(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    d = cg.cluster(actor, args.cluster)
    if args.json:
        print_json(asdict(d))
        return 0
    c = d.cluster
    print(f"{_title(c)} in collection {c.collection!r}: {c.size} face(s), {c.pinned} placed by a person"
          + (f"; subject {c.subject_id}" if c.subject_id else ""))
    for m in d.faces:
        print(f"  face {m.face_id:<8} quality {m.quality:.2f}  image {m.image_id}"
              + (f"  pinned by {m.assigned_by}" if m.pinned else ""))
    return 0


def _edited(args: Namespace, result, words: str) -> int:
    """An edit's outcome: its record as JSON, or one line of words."""
    if args.json:
        print_json(asdict(result))
    else:
        print(words)
    return 0


def _emptied(r) -> str:
    return f"; cluster(s) {', '.join(map(str, r.emptied))} left empty and removed" if r.emptied else ""


@_run
def cluster_merge(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    r = cg.merge(actor, args.clusters, into=args.into)
    return _edited(args, r, f"merged cluster(s) {', '.join(map(str, r.merged))} into cluster {r.cluster_id}: "
                            f"{r.faces_moved} face(s) moved (audited)")


@_run
def cluster_split(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    r = cg.split(actor, args.cluster, args.face)
    return _edited(args, r, f"split {len(r.faces)} face(s) of cluster {args.cluster} into new cluster "
                            f"{r.cluster_id} (audited)")


@_run
def cluster_move(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    r = cg.move(actor, args.faces, args.target)
    return _edited(args, r, f"moved {len(r.faces)} face(s) to cluster {r.cluster_id} (audited){_emptied(r)}")


@_run
def cluster_unassign(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    r = cg.unassign(actor, args.faces)
    return _edited(args, r, f"took {len(r.faces)} face(s) out of their cluster; later runs leave them out "
                            f"(audited){_emptied(r)}")


@_run
def cluster_name(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    row = cg.name(actor, args.cluster, args.name)
    return _edited(args, row, f"cluster {row.id} named {row.name!r}" if row.name else f"cluster {row.id}: name cleared")


@_run
def cluster_to_subject(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    from facesearch.cli.subject_commands import _attributes

    subject, report = cg.to_subject(actor, args.cluster, args.gallery, label=args.label,
                                    attributes=_attributes(args.attr))
    if args.json:
        print_json({"subject": asdict(subject), "report": asdict(report)})
        return 0
    print(f"cluster {args.cluster} is now subject {subject.id} {subject.label!r} in gallery {subject.gallery!r}: "
          f"{len(report.added)} face(s) enrolled, {subject.faces} in all")
    if report.suppressed:
        print(f"  {report.suppressed} face(s) not enrolled: they match an opt-out request")
    for name, why in report.failed:
        print(f"  ! {name}: {why}")
    return 0


@_run
def cluster_suggestions(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    found = cg.suggestions(actor, args.collection, limit=args.limit)
    if args.json:
        print_json(found.to_dict())
        return 0
    print(f"{found.collection}: {found.faces:,} faces; evidence counted from cosine {found.threshold:.3f} "
          f"(false-match rate {found.threshold_fmr:g} per pair)")
    print(f"\nclusters that may be one person ({len(found.merges)}); "
          "answer: facesearch cluster accept|reject merge A B")
    for m in found.merges:
        print(f"  clusters {m.cluster_a} ({m.size_a} faces) and {m.cluster_b} ({m.size_b} faces): "
              f"{m.cross_neighbours} neighbour pair(s)")
        print(f"    average: {m.average.words}")
        print(f"    best pair: {m.best.words}")
    print(f"\nunassigned faces that may belong to a cluster ({len(found.attaches)}); "
          "answer: facesearch cluster accept|reject attach FACE CLUSTER")
    for a in found.attaches:
        also = f"; also near cluster(s) {', '.join(map(str, a.other_clusters))}" if a.other_clusters else ""
        print(f"  face {a.face_id} -> cluster {a.cluster_id} ({a.cluster_size} faces), {a.support} neighbour(s) "
              f"there{also}")
        print(f"    best: {a.best.words}")
    return 0


def _answer(args: Namespace, cg: ClusterGovernance, actor: UserInfo, accept: bool) -> int:
    if args.kind == "merge":
        result = cg.answer_merge(actor, args.first, args.second, accept)
        message = (f"merged clusters {args.first} and {args.second} into cluster {result.cluster_id} (audited)"
                   if result else f"clusters {args.first} and {args.second} will not be suggested again (audited)")
    else:
        result = cg.answer_attach(actor, args.first, args.second, accept)
        message = (f"face {args.first} moved into cluster {args.second}, pinned (audited)" if result
                   else f"face {args.first} will not be suggested for cluster {args.second} again (audited)")
    if args.json:
        print_json({"accepted": accept, "kind": args.kind, "result": asdict(result) if result else None})
    else:
        print(message)
    return 0


@_run
def cluster_accept(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    return _answer(args, cg, actor, True)


@_run
def cluster_reject(args: Namespace, cg: ClusterGovernance, actor: UserInfo) -> int:
    return _answer(args, cg, actor, False)


__all__ = ["add_cluster_commands"]
