"""Each rule has one home: the threshold at a false-match rate (clustering, opt-out, tracking use
the calibration's one function), the permission table (governance, the API and the web pages read
the same table), and creating a collection is recorded from the CLI as from the API."""

from __future__ import annotations

import json

import pytest

from facesearch.cluster.core import ClusterParams, threshold_for_fmr
from facesearch.governance import AuditLog, Governance, PermissionDenied, UserInfo
from facesearch.governance.optout import FALLBACK_OPTOUT_THRESHOLD, OPTOUT_FMR, optout_threshold
from facesearch.governance.policy import PERMISSIONS, ROLES, Action, check, may
from facesearch.models.calibration import load_calibration, threshold_at_fmr
from facesearch.pipeline.tracking import DEFAULT_LINK_THRESHOLD, DEFAULT_REID_THRESHOLD, TrackerConfig
from facesearch.services.engine import Engine


@pytest.fixture(scope="module")
def calibration():
    found = load_calibration("buffalo_s")
    assert found is not None
    return found


def test_one_threshold_rule_for_clustering_optout_and_tracking(calibration):
    assert optout_threshold(calibration) == threshold_at_fmr(calibration, OPTOUT_FMR)
    tracker = TrackerConfig.from_calibration(calibration)
    assert tracker.link_threshold == threshold_at_fmr(calibration, 1e-4)
    assert tracker.reid_threshold == threshold_at_fmr(calibration, 1e-5)
    params = ClusterParams().resolved(calibration)
    assert params.link_threshold == threshold_at_fmr(calibration, params.link_fmr)
    assert threshold_for_fmr(1e-5, calibration) == threshold_at_fmr(calibration, 1e-5)
    # a rarer false match needs a higher score; beyond the counted range the tail extrapolates
    assert threshold_at_fmr(calibration, 1e-6) > threshold_at_fmr(calibration, 1e-4) > threshold_at_fmr(
        calibration, 1e-2)
    assert threshold_at_fmr(calibration, 1e-4) == pytest.approx(calibration.operating_points["0.0001"][0], abs=1e-4)


def test_without_a_calibration_each_caller_states_its_fallback():
    assert optout_threshold(None) == FALLBACK_OPTOUT_THRESHOLD
    tracker = TrackerConfig.from_calibration(None)
    assert (tracker.link_threshold, tracker.reid_threshold) == (DEFAULT_LINK_THRESHOLD, DEFAULT_REID_THRESHOLD)
    with pytest.raises(ValueError, match="needs one"):
        threshold_at_fmr(None, 1e-4)


def test_the_permission_table_covers_every_action_and_role():
    assert set(PERMISSIONS) == set(Action)
    assert all(set(roles) <= set(ROLES) and roles for roles in PERMISSIONS.values())
    assert may("auditor", Action.READ_AUDIT) and not may("auditor", Action.SEARCH)
    assert may("investigator", Action.SEARCH) and not may("investigator", Action.ERASE)
    with pytest.raises(PermissionDenied, match="needs admin or investigator"):
        check("audrey", "auditor", Action.SEARCH)


def test_governance_checks_with_the_table(tmp_path):
    with Engine.open(tmp_path / "home", backend="faiss") as engine:
        gov = Governance(engine)
        auditor = UserInfo(7, "audrey", "auditor")
        with pytest.raises(PermissionDenied, match=r"audrey \(auditor\) may not do this; needs admin"):
            gov.create_collection(auditor, "c", "consent")
        with pytest.raises(PermissionDenied, match="needs admin or investigator"):
            gov.collections(auditor)


def test_creating_a_collection_from_the_cli_is_audited(tmp_path, cli):
    home = tmp_path / "home"
    code, out, err = cli("collections", "--home", home, "--create", "cases", "--legal-basis", "court order 7")
    assert code == 0, err
    with Engine.open(home, backend="faiss") as engine:
        records = [e for e in AuditLog(engine.catalog).entries() if e.action == "collection_create"]
    assert len(records) == 1
    assert records[0].details == {"collection": "cases", "legal_basis": "court order 7"}
    assert records[0].actor.startswith("local:")


def test_reading_the_audit_log_goes_through_governance_from_the_cli_too(tmp_path, cli):
    home = tmp_path / "home"
    assert cli("collections", "--home", home, "--create", "cases", "--legal-basis", "consent")[0] == 0
    code, out, err = cli("audit", "export", "--home", home)
    assert code == 0, err
    assert [json.loads(line)["action"] for line in out.splitlines()] == ["collection_create"]
    with Engine.open(home, backend="faiss") as engine:
        gov = Governance(engine)
        exports = gov.audit.entries(action="audit_export")
        assert len(exports) == 1 and exports[0].details == {"returned": 1}
        with pytest.raises(PermissionDenied, match="needs auditor"):
            gov.read_audit(UserInfo(1, "ada", "admin"))
