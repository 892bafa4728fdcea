"""The whole REST API fuzzed from its own OpenAPI schema (schemathesis), authenticated.

Every operation the schema declares gets generated requests (valid and invalid bodies, query
strings, path parameters, multipart uploads of random bytes) against the real app (in process,
ASGI: real engine, catalog, FAISS index and models) on a home holding users, two collections of
real photos and a grant. Each request is sent with a real API key: the auditor's for the audit
routes, the admin's everywhere else (the admin can do the most; the investigator-only surface is
the same routes). Checks: no 5xx, and every response whose status the schema documents
conforms to its schema.

Excluded: ``POST /api/collections/{name}/ingest-folder`` takes a server path -- a fuzzer must
not walk the server's filesystem (issue 10 point 3 restricts it to allowed roots; once that
lands it can be fuzzed with the roots set to a tmp folder).
"""

from __future__ import annotations

import contextlib
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.conftest import API_LAYOUT, api_build_env
from tests.openapi_check import schema_violations
from tests.realworld import fuzz_examples

#: Not fuzzed (see the module docstring).
EXCLUDED_PATHS = r"/ingest-folder$"
#: Per operation: 54 operations x this = the run's size (about a minute here; FACESEARCH_FUZZ_SCALE=N for more).
MAX_EXAMPLES = fuzz_examples(12)


@pytest.fixture(scope="module")
def api_fuzz_env(tmp_path_factory, analyzer):
    """A served home of its own (the fuzzer changes it): API_LAYOUT, api_ivy granted alpha."""
    build = contextlib.contextmanager(api_build_env)
    with build(tmp_path_factory.mktemp("api_fuzz") / "home", analyzer, API_LAYOUT, {"alpha": ["api_ivy"]}) as env:
        yield env


@pytest.fixture(scope="module")
def api_schema(api_fuzz_env):
    return schemathesis.openapi.from_asgi("/openapi.json", api_fuzz_env.app).exclude(path_regex=EXCLUDED_PATHS)


def operations(api_schema) -> list:
    return [result.ok() for result in api_schema.get_all_operations()]


#: Operations whose response schema nests a tuple in a list (``list[tuple[int, str]]``: JSON Schema
#: 2020-12 ``prefixItems`` under ``items``). schemathesis 4.32 rewrites that into a draft-4 ``items``
#: array and then rejects its own rewrite ("Invalid Schema Object in response definition"), so
#: these responses are validated by :func:`conforms_2020_12` instead, against the schema as served.
NESTED_TUPLE_RESPONSES = {("GET", "/api/audit/verify"), ("POST", "/api/collections/{name}/clusters/run")}


def conforms_2020_12(spec: dict, operation, response) -> None:
    """The response's JSON validates against its documented schema (undocumented statuses are not checked)."""
    errors = schema_violations(spec, operation.path, operation.method, response.status_code, response.json())
    assert not errors, f"{operation.label} {response.status_code}: response violates its schema: {errors[:5]}"


def fuzz_operation(operation, headers: dict[str, str], spec: dict) -> None:
    """Hypothesis over one operation: valid requests and (where the schema allows) invalid ones."""
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    with contextlib.suppress(Exception):  # no negative cases for an operation without parameters
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))

    # CI runs a fixed sequence (a red CI must be reproducible); FACESEARCH_FUZZ_RANDOM=1 explores
    # new inputs each run, as the run that found ids past 2**63 reaching SQLite did.
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              derandomize=os.environ.get("FACESEARCH_FUZZ_RANDOM") != "1",
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=st.one_of(strategies))
    def run(case) -> None:
        if (operation.method.upper(), operation.path) in NESTED_TUPLE_RESPONSES:
            response = case.call(headers=headers)
            case.validate_response(response, checks=[not_a_server_error])
            conforms_2020_12(spec, operation, response)
        else:
            case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])

    run()


def test_api_conforms_and_never_fails(api_schema, api_fuzz_env):
    """All operations in one test (schemathesis's pytest plugin does not run under pytest 9): each
    failing operation is reported with the request that broke it, then the test fails."""
    failures = []
    spec = api_fuzz_env.app.openapi()
    for operation in operations(api_schema):
        user = "api_audrey" if operation.path.startswith("/api/audit") else "api_admin"
        try:
            fuzz_operation(operation, api_fuzz_env.headers(user), spec)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then fail once
            failures.append(f"{operation.label}:\n{exc}")
    assert not failures, f"{len(failures)} operation(s) failed:\n\n" + "\n\n".join(failures)


def test_schema_covers_the_api(api_schema):
    """The fuzz run is only as wide as the schema: every route a client uses must be in it."""
    paths = {operation.path for operation in operations(api_schema)}
    for path in ("/api/search", "/api/verify", "/api/collections/{name}/photos", "/api/audit", "/api/erase",
                 "/api/subjects", "/api/collections/{name}/clusters/run"):
        assert path in paths, path
    assert not any(path.endswith("/ingest-folder") for path in paths)


def test_out_of_range_numbers_are_422(api_fuzz_env):
    """Found by the run above: an id (or a retention period) beyond 64 bits reached SQLite and
    raised OverflowError (a 500)."""
    client, huge = api_fuzz_env.as_user("api_admin"), 2**63
    for method, path, body in (("GET", f"/api/faces/{huge}", None), ("DELETE", f"/api/subjects/{huge}", None),
                               ("DELETE", f"/api/subject-faces/{huge}", None), ("GET", f"/api/clusters/{huge}", None),
                               ("POST", "/api/erase", {"faces": [huge]}),
                               ("POST", "/api/clusters/merge", {"cluster_ids": [1, huge]})):
        response = client.request(method, path, json=body)
        assert response.status_code == 422, (method, path, response.status_code, response.text)
    assert client.get(f"/api/faces/{huge - 1}").status_code in (403, 404)  # in range: an ordinary unknown id

    for days, expected in ((2**70, 422), (10**12, 422), (0, 422), (-5, 422), (36_500, 201)):
        response = client.post("/api/collections", json={"name": f"kept {days % 997}", "legal_basis": "test",
                                                          "retention_days": days})
        assert response.status_code == expected, (days, response.status_code, response.text)


def test_retention_range_is_the_engines_rule(cli, tmp_path):
    """One home for the rule (Engine.create_collection): the CLI refuses what the API refuses."""
    home = tmp_path / "home"
    for days in ("0", "-1", "36501", str(10**12)):
        code, _out, err = cli("collections", "--create", "c", "--legal-basis", "test", "--retention-days", days,
                              "--home", home)
        assert code == 2 and "retention" in err, (days, code, err)
    code, out, _err = cli("collections", "--create", "c", "--legal-basis", "test", "--retention-days", "36500",
                          "--home", home)
    assert code == 0 and "created collection" in out
