"""Schemathesis over every operation of the app's own OpenAPI document, against a real
uvicorn server: no 5xx, every error a JSON {"error": ...}, and responses that match
the document (status codes, content types, bodies). Every operation gets
DIALTONE_FUZZ_EXAMPLES examples (default 20; raise it for a longer hunt); the server
hashes passwords with a cheap argon2 cost here, so the fuzzer spends its time on
requests rather than on key stretching."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_TOKEN, make_settings
from tests.e2ee import DeviceKeys
from tests.security.conftest import threaded_server

# schemathesis 3 still builds on jsonschema's deprecated resolver.
pytestmark = pytest.mark.filterwarnings("ignore:jsonschema.RefResolver:DeprecationWarning")

EXAMPLES = int(os.environ.get("DIALTONE_FUZZ_EXAMPLES", "20"))
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


def _admin_token(url: str) -> str:
    with httpx.Client(base_url=url, timeout=10) as http:
        invite = http.post("/server/invites", headers={"X-Admin-Token": ADMIN_TOKEN}).json()[
            "token"
        ]
        body = {
            "username": "fuzzadmin",
            "password": "password1",
            "public_key": DeviceKeys().public_b64,
            "invite_token": invite,
        }
        response = http.post("/auth/register", json=body)
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


def test_every_endpoint_survives_fuzzing(tmp_path: Path, sqlite_template: Path) -> None:
    import shutil

    path = tmp_path / "dialtone.db"
    shutil.copyfile(sqlite_template, path)
    app_settings = make_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{path}",
        # Far below the production floor (load_settings refuses it): fuzzing, not hashing.
        argon2_memory_kib=64,
        argon2_time_cost=1,
    )
    with threaded_server(app_settings) as url:
        token = _admin_token(url)
        raw = httpx.get(f"{url}/schema/openapi.json", timeout=10)
        assert raw.status_code == 200
        schemathesis.experimental.OPEN_API_3_1.enable()  # Litestar writes OpenAPI 3.1
        schema = schemathesis.from_dict(raw.json(), base_url=url)
        operations = [result.ok() for result in schema.get_all_operations()]
        # Logging out ends the fuzzer's own session, bans (of whatever address it picks)
        # refuse what follows and draining takes the node out of rotation: keep them
        # for last, in that order.
        last = ["/admin/bans", "/auth/logout", "/admin/drain"]
        operations.sort(key=lambda op: last.index(op.path) + 1 if op.path in last else 0)
        assert len(operations) >= 20
        failures: list[str] = []
        succeeded: set[str] = set()
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=10)
                case.validate_response(response, checks=CHECKS)
                if response.status_code < 300:
                    succeeded.add(f"{case.method} {case.path}")
                if response.status_code >= 400:
                    body = response.json()
                    assert isinstance(body.get("error"), str)
                    assert body["error"]
                    assert isinstance(body.get("code"), str), body
                    assert body["code"]
                    assert "Traceback" not in response.text

            try:
                run()
            except Exception as exc:  # collect them all, then fail once with the list
                failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
        assert not failures, "\n\n".join(failures)
        # The fuzzer got past authentication and validation, not only 4xx everywhere.
        assert len(succeeded) >= 8, succeeded


@pytest.mark.parametrize("path", ["/schema/openapi.json"])
def test_schema_documents_errors(tmp_path: Path, sqlite_template: Path, path: str) -> None:
    import shutil

    db = tmp_path / "dialtone.db"
    shutil.copyfile(sqlite_template, db)
    with threaded_server(make_settings(tmp_path, f"sqlite+aiosqlite:///{db}")) as url:
        document = httpx.get(url + path, timeout=10).json()
    assert document["components"]["schemas"]["Error"]["required"] == ["error"]
    login = document["paths"]["/auth/login"]["post"]["responses"]
    assert "Retry-After" in login["429"]["headers"]
    revoke = document["paths"]["/devices/{device_id}"]["delete"]["responses"]
    assert "content" not in revoke["204"] or not revoke["204"]["content"]
    for item in document["paths"].values():
        for operation in item.values():
            assert "default" in operation["responses"]
