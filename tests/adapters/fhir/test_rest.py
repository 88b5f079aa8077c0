"""Tests for adapters/fhir/rest.py: the record's FHIR REST face, over real HTTP."""

from __future__ import annotations

import threading

import httpx
import pytest

from adapters.fhir.record import open_record
from adapters.fhir.rest import make_server

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
FNR_VALUE = "01015000232"
PATIENT_UUID = "0d9a6c2e-1f3b-4c55-9a51-3f0e2b7c9a01"
ENCOUNTER_UUID = "5b1c7e44-8d2a-4f0e-b3a9-6c2d1e0f4a02"


def transaction(family="Nordmann"):
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{PATIENT_UUID}",
                "resource": {"resourceType": "Patient", "id": PATIENT_UUID, "identifier": [{"system": FNR, "value": FNR_VALUE}], "name": [{"family": family}]},
                "request": {"method": "PUT", "url": f"Patient?identifier={FNR}|{FNR_VALUE}"},
            },
            {
                "fullUrl": f"urn:uuid:{ENCOUNTER_UUID}",
                "resource": {"resourceType": "Encounter", "id": ENCOUNTER_UUID, "status": "finished", "subject": {"reference": f"urn:uuid:{PATIENT_UUID}"}},
                "request": {"method": "PUT", "url": f"Encounter/{ENCOUNTER_UUID}"},
            },
        ],
    }


class _Log:
    """Collects the server's log events, to check what they carry."""

    def __init__(self):
        self.events = []

    def info(self, event, **fields):
        self.events.append((event, fields))

    error = info


@pytest.fixture
def log():
    return _Log()


@pytest.fixture
def client(settings, log):
    """An HTTP client on a server (port 0, own thread) over the test's record."""
    server = make_server(lambda: open_record(settings), "127.0.0.1", 0, log=log)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        with httpx.Client(base_url=server.base_url) as http:
            yield http
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def loaded(client):
    """The client, after one transaction has stored a patient and an encounter."""
    assert client.post("", json=transaction()).status_code == 200
    return client


class TestRest:
    def test_metadata(self, client):
        """GET /metadata returns an R4 CapabilityStatement listing transaction and search params."""
        response = client.get("/metadata")
        body = response.json()
        assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+json")
        assert (body["resourceType"], body["fhirVersion"]) == ("CapabilityStatement", "4.0.1")
        assert body["rest"][0]["interaction"] == [{"code": "transaction"}]
        encounter = next(r for r in body["rest"][0]["resource"] if r["type"] == "Encounter")
        assert {p["name"] for p in encounter["searchParam"]} == {"_id", "identifier", "patient", "subject", "_tag"}

    def test_transaction(self, client):
        """POST of a transaction returns a transaction-response with status, location and etag."""
        first = client.post("", json=transaction()).json()
        again = client.post("/", json=transaction()).json()
        assert first["type"] == "transaction-response"
        assert first["entry"][0]["response"] == {"status": "201 Created", "location": f"Patient/{PATIENT_UUID}/_history/1", "etag": 'W/"1"'}
        assert [e["response"]["status"] for e in again["entry"]] == ["200 OK", "200 OK"]

    def test_read(self, loaded):
        """GET Type/id returns the current version with its ETag."""
        response = loaded.get(f"/Encounter/{ENCOUNTER_UUID}")
        assert response.status_code == 200 and response.headers["etag"] == 'W/"1"'
        assert response.json()["subject"] == {"reference": f"Patient/{PATIENT_UUID}"}

    @pytest.mark.parametrize("path", ["/Patient/absent", "/Patient/bad id", "/nothing", "/Patient/x/_history/1"])
    def test_not_found(self, loaded, path):
        """Unknown resources, versions and paths answer 404 with an OperationOutcome."""
        response = loaded.get(path)
        assert response.status_code == 404 and response.json()["resourceType"] == "OperationOutcome"

    def test_deleted_is_gone(self, loaded):
        """A deleted resource answers 410."""
        delete = {"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": f"Encounter/{ENCOUNTER_UUID}"}}]}
        assert loaded.post("", json=delete).json()["entry"][0]["response"]["status"] == "200 OK"
        assert loaded.get(f"/Encounter/{ENCOUNTER_UUID}").status_code == 410
        history = loaded.get(f"/Encounter/{ENCOUNTER_UUID}/_history").json()
        assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT"]

    def test_history_and_vread(self, loaded):
        """_history lists versions newest first; _history/{vid} reads one."""
        loaded.post("", json=transaction(family="Hansen"))
        history = loaded.get(f"/Patient/{PATIENT_UUID}/_history").json()
        assert (history["type"], history["total"]) == ("history", 2)
        assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
        old = loaded.get(f"/Patient/{PATIENT_UUID}/_history/1")
        assert old.status_code == 200 and old.json()["name"] == [{"family": "Nordmann"}]

    @pytest.mark.parametrize(
        ("path", "params"),
        [("/Patient", {"identifier": f"{FNR}|{FNR_VALUE}"}), ("/Patient", {"identifier": FNR_VALUE}), ("/Encounter", {"patient": PATIENT_UUID}), ("/Encounter", {"subject": f"Patient/{PATIENT_UUID}", "_id": ENCOUNTER_UUID})],
        ids=["identifier", "bare-identifier", "patient", "subject-and-id"],
    )
    def test_search(self, loaded, path, params):
        """Search returns a searchset Bundle with total and fullUrls."""
        body = loaded.get(path, params=params).json()
        assert (body["type"], body["total"]) == ("searchset", 1)
        assert body["entry"][0]["fullUrl"].startswith("http://127.0.0.1:")
        assert body["entry"][0]["fullUrl"].endswith(f"{path}/{body['entry'][0]['resource']['id']}")

    @pytest.mark.parametrize(
        ("path", "params"),
        [("/Patient", {"identifier": f"{FNR}|00000000000"}), ("/Patient", {"identifier": f"urn:other|{FNR_VALUE}"}), ("/Patient", {"identifier": "00000000000"}), ("/Encounter", {"patient": "someone-else"}), ("/Encounter", {"subject": f"Patient/{PATIENT_UUID}", "_id": "other"})],
        ids=["identifier-value", "identifier-system", "bare-identifier", "patient", "subject-and-id"],
    )
    def test_search_misses(self, loaded, path, params):
        """Each search parameter filters: a value that matches nothing gives an empty searchset, not everything."""
        body = loaded.get(path, params=params).json()
        assert (body["type"], body["total"]) == ("searchset", 0)

    def test_search_bad_parameter(self, loaded):
        """An unsupported search parameter answers 400."""
        assert loaded.get("/Patient", params={"name": "x"}).status_code == 400

    def test_a_nul_in_a_search_answers_400_not_503(self, loaded):
        """A NUL no stored value holds (PostgreSQL's text refuses one): a bad request, never "record unavailable"."""
        response = loaded.get("/Patient?identifier=0101%0050232")
        assert response.status_code == 400 and "NUL" in response.json()["issue"][0]["diagnostics"]

    @pytest.mark.parametrize(
        "content",
        [b"{not json", b'{"resourceType": "Bundle", "type": "batch"}', b'{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "GET", "url": "Patient"}}]}'],
        ids=["not-json", "batch", "bad-method"],
    )
    def test_bad_bundle(self, client, content):
        """A body that is not an applicable transaction answers 400 with an OperationOutcome."""
        response = client.post("", content=content, headers={"content-type": "application/fhir+json"})
        assert response.status_code == 400
        assert response.json()["issue"][0]["severity"] == "error"

    def test_unsupported_method(self, client):
        """PUT on a resource is not served, and says so with 405."""
        assert client.put("/Patient/x", json={}).status_code == 405

    def test_logs_without_query_values(self, loaded, log):
        """Request logs carry the path and status, never the query string's identifier."""
        loaded.get("/Patient", params={"identifier": FNR_VALUE})
        assert ("fhir_request", {"method": "GET", "path": "/fhir/Patient", "status": 200}) in log.events
        assert FNR_VALUE not in repr(log.events)
