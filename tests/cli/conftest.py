"""Fixtures the CLI verbs share: settings with a queued external FHIR destination, and a server standing in for it."""

from __future__ import annotations

import io
import json

import pytest

from router.cli import main
from router.errors import Refused
from router.testing import delete_queues, isolated_settings, settings_env

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"


class ScriptedFhirServer:
    """Stands in for an external FHIR server: takes the first *take* Bundles, then refuses while `refusing`; keeps what it took."""

    def __init__(self, *, take: int = 0) -> None:
        self.take = take
        self.refusing = True
        self.applied: list[dict] = []

    def apply(self, bundle):
        if len(self.applied) >= self.take and self.refusing:
            raise Refused("destination refused with HTTP 422: business-rule")
        self.applied.append(bundle)


@pytest.fixture
def exported(tmp_path, monkeypatch):
    """Make isolated settings and export them to the CLI's environment (stdin not a terminal); queues go afterwards."""
    made = []

    def make(broker_url: str | None, *, routes: dict | None = None, broker: dict | None = None):
        s = isolated_settings(tmp_path, broker_url=broker_url, routes=routes, broker=broker)
        for name in ("HELSEBRO_BROKER_URL", "HELSEBRO_RECORD_URL", "HELSEBRO_XSD_DIR", "HELSEBRO_MAPPINGS_DIR", "HELSEBRO_OPERATOR"):
            monkeypatch.delenv(name, raising=False)
        for name, value in settings_env(s).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal unless a test says so
        made.append(s)
        return s

    yield make
    for s in made:
        if s.broker_url:
            delete_queues(s)


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def with_destination(request, exported):
    """Settings with an external FHIR destination `ekstern` beside the record, exported to the CLI's environment."""
    routes = {
        "destinations": {"record": {"kind": "record"},
                         "ekstern": {"kind": "fhir", "on_failure": "strict", "server": {"base_url": "http://127.0.0.1:9/fhir"}}},
        "routes": [{"name": "all", "to": ["record", "ekstern"]}],
    }
    return exported(RABBIT if request.param == "rabbitmq" else None, routes=routes)


@pytest.fixture
def scripted_fhir() -> type[ScriptedFhirServer]:
    """The ScriptedFhirServer class, for tests to make one with the script they need."""
    return ScriptedFhirServer


@pytest.fixture
def convert_file(capsys, tmp_path):
    """`helsebro convert` on *data* written to a file (named *name*): its exit code and the NDJSON documents it printed."""

    def run(data: bytes, name: str = "in.hl7") -> tuple[int, list[dict]]:
        path = tmp_path / name
        path.write_bytes(data)
        capsys.readouterr()
        code = main(["convert", str(path)])
        return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    return run
