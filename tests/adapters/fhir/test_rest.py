"""Tests for adapters/fhir/rest.py: the record's FHIR REST face, over real HTTP."""

from __future__ import annotations

import socket
import threading
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
import yaml

from adapters.fhir.record import open_record
from adapters.fhir.rest import SearchPages, make_server

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
        assert [i["code"] for i in body["rest"][0]["interaction"]] == ["transaction"]
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


    def test_logs_without_resource_ids(self, loaded, log):
        """A read's and a history's lines show the route, not the id: an id derived from a fødselsnummer stands for it."""
        loaded.get(f"/Patient/{PATIENT_UUID}")
        loaded.get(f"/Patient/{PATIENT_UUID}/_history/1")
        assert ("fhir_request", {"method": "GET", "path": "/fhir/Patient/{id}", "status": 200}) in log.events
        assert ("fhir_request", {"method": "GET", "path": "/fhir/Patient/{id}/_history/1", "status": 200}) in log.events
        assert PATIENT_UUID not in repr(log.events)

class TestRestEdges:
    """Found by review (H100): answers a FHIR client relies on."""

    @pytest.mark.parametrize(
        "params",
        [{"identifier": f"{FNR}|00000000000,{FNR}|{FNR_VALUE}"}, {"identifier": f"{FNR_VALUE},00000000000"}, {"_id": f"other,{PATIENT_UUID}"}],
        ids=["system-and-value", "bare", "id"],
    )
    def test_a_comma_separated_search_matches_any_value(self, loaded, params):
        """FHIR's `a,b` is either value: a client looking up several patients at once found none of them."""
        body = loaded.get("/Patient", params=params).json()
        assert (body["type"], body["total"]) == ("searchset", 1)
        assert body["entry"][0]["resource"]["id"] == PATIENT_UUID

    def test_a_comma_search_lists_each_match_once_with_the_other_parameters_anded(self, loaded):
        """Alternatives that find the same resource list it once; another parameter still narrows them all."""
        body = loaded.get("/Patient", params={"identifier": f"{FNR_VALUE},{FNR}|{FNR_VALUE}"}).json()
        assert body["total"] == 1
        body = loaded.get("/Patient", params={"identifier": f"{FNR_VALUE},{FNR}|{FNR_VALUE}", "_id": "other"}).json()
        assert body["total"] == 0

    def test_an_escaped_comma_is_part_of_the_value(self, client):
        """`\\,` is a comma inside one value (FHIR's escape), not two alternatives."""
        patient = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:local", "value": "MED,101"}]}
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient, "request": {"method": "PUT", "url": "Patient/p1"}}]}
        assert client.post("", json=bundle).status_code == 200
        assert client.get("/Patient", params={"identifier": "urn:local|MED\\,101"}).json()["total"] == 1

    def test_head_answers_like_get_without_a_body(self, client):
        """HEAD (a load balancer's health check) answered 501 with an HTML page."""
        response = client.head("/metadata")
        assert response.status_code == 200 and response.content == b""
        assert response.headers["content-type"].startswith("application/fhir+json")

    @pytest.mark.parametrize("method", ["OPTIONS", "FOO"])
    def test_an_unknown_method_answers_an_operation_outcome_not_html(self, client, method):
        """http.server's own refusals were HTML pages, which no FHIR client can read."""
        response = client.request(method, "/metadata")
        assert response.status_code == 501
        assert response.headers["content-type"].startswith("application/fhir+json")
        assert response.json()["resourceType"] == "OperationOutcome"

    def test_a_chunked_body_is_refused_with_411_and_the_connection_closed(self, client):
        """A chunked POST (no Content-Length) was read as empty: "body is not JSON", and its chunks
        then answered as the connection's next request, so the client's next call got a stale 400."""
        host, port = client.base_url.host, client.base_url.port
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"POST /fhir HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):  # the server closes the connection after its one answer
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 411 ")
        assert answer.count(b"HTTP/1.1") == 1 and b"OperationOutcome" in answer

    def test_a_deeply_nested_body_answers_400_not_500(self, client, log):
        """JSON nested deeper than Python's recursion (within orjson's limit) failed as an internal
        error: a 500, which an engine posting to this server retries for ever."""
        resource = '{"resourceType":"Patient","id":"d","extension":' + '[{"url":"x","extension":' * 450 + "[]" + "}]" * 450 + "}"
        body = '{"resourceType":"Bundle","type":"transaction","entry":[{"resource":' + resource + ',"request":{"method":"PUT","url":"Patient/d"}}]}'
        response = client.post("", content=body.encode())
        # 400 with an OperationOutcome: from the source, RecursionError ("structure"); compiled, the walks go deeper and
        # the record's canonical JSON (orjson: 254 levels) refuses it first ("value"). Either way the client's error.
        issue = response.json()["issue"][0]
        assert response.status_code == 400 and issue["severity"] == "error" and issue["code"] in ("structure", "value")
        assert "nest" in issue["diagnostics"]
        assert not [e for e, _ in log.events if e == "fhir_request_failed"]
        assert client.post("", json=transaction()).status_code == 200  # the record it used still works
        assert client.get("/Patient/d").status_code == 404

    def test_a_client_gone_before_its_answer_prints_no_traceback(self, settings, log, capsys):
        """socketserver printed a traceback on stderr for every client that hung up before its answer."""
        server = make_server(lambda: open_record(settings), "127.0.0.1", 0, log=log)
        try:
            try:
                raise BrokenPipeError(32, "Broken pipe")
            except BrokenPipeError:
                server.handle_error(None, ("127.0.0.1", 1))
            try:
                raise ValueError("boom")
            except ValueError:
                server.handle_error(None, ("127.0.0.1", 1))
        finally:
            server.server_close()
        assert capsys.readouterr().err == ""
        assert ("fhir_connection_failed", {"error": "ValueError"}) in log.events

    @pytest.mark.parametrize("path", [f"/Patient%3Fidentifier%3D{FNR_VALUE}", f"/Patient/x/_history/1/{FNR_VALUE}%7C", f"/Patient;identifier={FNR_VALUE}"], ids=["escaped-query", "long", "semicolon"])
    def test_a_path_that_routes_nowhere_is_not_logged(self, client, log, path):
        """A client that escapes its `?` (or otherwise mangles the URL) put the search's fødselsnummer
        in the request log's path; a path the server does not route is logged as its base only."""
        assert client.get(path).status_code == 404
        assert FNR_VALUE not in repr(log.events)
        assert ("fhir_request", {"method": "GET", "path": "/fhir/…", "status": 404}) in log.events

    def test_count_pages_through_next_links_without_skipping_or_repeating(self, client):
        """`_count` was refused as an unsupported parameter (a HAPI client's `.count(n)` got 400);
        now each page holds at most that many, `next` leads on, and every match comes once."""
        entries = [
            {"resource": {"resourceType": "Patient", "id": f"p{i}", "identifier": [{"system": "urn:local", "value": f"v{i}"}]}, "request": {"method": "PUT", "url": f"Patient/p{i}"}}
            for i in range(5)
        ]
        assert client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}).status_code == 200
        page = client.get("/Patient", params={"identifier": "urn:local|", "_count": "2"}).json()
        seen, totals = [], set()
        while True:
            seen += [e["resource"]["id"] for e in page["entry"]]
            totals.add(page["total"])
            assert len(page["entry"]) <= 2
            link = next((ln["url"] for ln in page.get("link", []) if ln["relation"] == "next"), None)
            if link is None:
                break
            page = client.get(link).json()
        assert seen == [f"p{i}" for i in range(5)] and totals == {5}

    @pytest.mark.parametrize("count", ["-1", "x", "100000"])
    def test_a_bad_count_answers_400(self, loaded, count):
        """A `_count` that is not a whole number from 0 to 1000 is refused with an OperationOutcome."""
        response = loaded.get("/Patient", params={"_count": count})
        assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"

    def test_count_zero_gives_the_total_only(self, loaded):
        """`_count=0` asks how many match, without the resources."""
        body = loaded.get("/Patient", params={"_count": "0"}).json()
        assert (body["total"], body["entry"]) == (1, [])
        assert [link["relation"] for link in body["link"]] == ["self"]

    def test_a_search_without_count_is_paged_and_says_how_to_go_on(self, client):
        """Review H122: a search without `_count` answered every match in one Bundle (the whole
        record for `GET /Patient`), read whole from the database. A page now holds 100 matches by
        default, `total` counts them all, `self` repeats the search and `next` leads on."""
        entries = [
            {"resource": {"resourceType": "Patient", "id": f"p{i:03}"}, "request": {"method": "PUT", "url": f"Patient/p{i:03}"}}
            for i in range(101)
        ]
        assert client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}).status_code == 200
        first = client.get("/Patient").json()
        links = {link["relation"]: link["url"] for link in first["link"]}
        assert (first["total"], len(first["entry"]), links["self"]) == (101, 100, str(client.base_url.join("Patient")))
        last = client.get(links["next"]).json()
        assert [e["resource"]["id"] for e in last["entry"]] == ["p100"] and last["total"] == 101
        assert [link["relation"] for link in last["link"]] == ["self"]

    def test_a_full_last_page_has_no_next_link(self, client):
        """A page that ends exactly at the last match leads nowhere: no `next` to an empty page."""
        entries = [{"resource": {"resourceType": "Patient", "id": f"p{i}"}, "request": {"method": "PUT", "url": f"Patient/p{i}"}} for i in range(2)]
        assert client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}).status_code == 200
        body = client.get("/Patient", params={"_count": "2"}).json()
        assert len(body["entry"]) == 2 and [link["relation"] for link in body["link"]] == ["self"]

    @pytest.mark.parametrize(("search", "found"), [
        (r"urn:x|a\|b", ["bar"]),  # an escaped bar is part of the code
        (r"a\|b", ["bar"]),  # any system: the escaped bar does not split
        (r"urn:x|c\\", ["backslash"]),  # `\\` is one backslash
        (r"urn:x|c\\,urn:x|d\$e", ["backslash", "dollar"]),  # an escaped backslash before a real comma
        (r"urn:x|a\,b", ["comma"]),
    ])
    def test_escaped_characters_in_a_token_search(self, client, search, found):
        """Review H122: `identifier=urn:x|a\\|b` split at the escaped bar's backslash and found nothing,
        and `c\\\\,d` (a backslash, then a comma) kept the comma in the value. FHIR's search escapes
        `\\|` `\\,` `\\$` `\\\\` are now undone after the value is split at its unescaped ones."""
        values = {"bar": "a|b", "backslash": "c\\", "dollar": "d$e", "comma": "a,b"}
        entries = [
            {"resource": {"resourceType": "Patient", "id": id_, "identifier": [{"system": "urn:x", "value": value}]}, "request": {"method": "PUT", "url": f"Patient/{id_}"}}
            for id_, value in values.items()
        ]
        assert client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}).status_code == 200
        body = client.get("/Patient", params={"identifier": search}).json()
        assert sorted(e["resource"]["id"] for e in body["entry"]) == found and body["total"] == len(found)

    def test_a_repeated_parameter_ands_its_values(self, loaded):
        """`identifier=a&identifier=b` is FHIR's AND of the two; it was refused as repeated."""
        both = loaded.get("/Patient", params=[("identifier", f"{FNR}|{FNR_VALUE}"), ("_id", PATIENT_UUID), ("_id", PATIENT_UUID)]).json()
        other = loaded.get("/Patient", params=[("identifier", f"{FNR}|{FNR_VALUE}"), ("identifier", f"{FNR}|x")]).json()
        assert (both["total"], other["total"]) == (1, 0)

    @pytest.mark.parametrize("request_", [
        {"method": "PUT", "url": "Patient?identifier=urn:x|"},
        {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:x|"},
    ], ids=["conditional-update", "conditional-create"])
    def test_a_condition_matching_several_answers_412(self, client, request_):
        """Review H122: a conditional update or create whose search finds two resources answered 400
        (`value`); FHIR says 412 Precondition Failed, which a client tells apart from a bad Bundle."""
        twins = [
            {"resource": {"resourceType": "Patient", "id": id_, "identifier": [{"system": "urn:x", "value": id_}]}, "request": {"method": "PUT", "url": f"Patient/{id_}"}}
            for id_ in ("twin-a", "twin-b")
        ]
        assert client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": twins}).status_code == 200
        response = client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}, "request": request_}]})
        assert response.status_code == 412
        assert response.json()["issue"][0]["code"] == "multiple-matches"
        assert client.get("/Patient").json()["total"] == 2

    def test_the_capability_statement_claims_only_what_the_endpoints_do(self, loaded):
        """Review H122: every resource claimed conditionalCreate, conditionalUpdate, updateCreate and
        conditionalDelete `multiple`, but its endpoint has no create, update or delete (405): a client
        that believed it POSTed `Patient` with If-None-Exist and failed. What it claims now works."""
        resources = loaded.get("/metadata").json()["rest"][0]["resource"]
        needs = {"conditionalCreate": "create", "updateCreate": "update", "conditionalUpdate": "update", "conditionalDelete": "delete"}
        probes = {
            "read": ("GET", f"/Patient/{PATIENT_UUID}"), "vread": ("GET", f"/Patient/{PATIENT_UUID}/_history/1"),
            "history-instance": ("GET", f"/Patient/{PATIENT_UUID}/_history"), "search-type": ("GET", "/Patient"),
            "create": ("POST", "/Patient"), "update": ("PUT", f"/Patient/{PATIENT_UUID}"), "delete": ("DELETE", f"/Patient/{PATIENT_UUID}"),
            "patch": ("PATCH", f"/Patient/{PATIENT_UUID}"),
        }
        patient = next(r for r in resources if r["type"] == "Patient")
        body = {"resourceType": "Patient", "id": PATIENT_UUID}
        for code in (i["code"] for i in patient["interaction"]):
            method, path = probes[code]
            assert loaded.request(method, path, json=body if method in ("POST", "PUT") else None).status_code == 200, code
        for resource in resources:
            claimed = {i["code"] for i in resource["interaction"]}
            for flag, interaction in needs.items():
                assert resource.get(flag) in (None, False, "not-supported") or interaction in claimed, (resource["type"], flag)

    def test_the_capability_statement_lists_every_type_the_mappings_write(self, loaded):
        """The statement listed 24 types, but the shipped mappings also write MedicationDispense,
        Communication, CommunicationRequest, Consent and List, which the record holds and this face
        serves: a client that reads the statement before it searches never asked for them."""
        claimed = {r["type"] for r in loaded.get("/metadata").json()["rest"][0]["resource"]}
        written = {
            yaml.safe_load(path.read_text(encoding="utf-8"))["type"]
            for path in (Path(__file__).resolve().parents[3] / "mappings").glob("*/segments/*.yaml")
        }
        assert {"Patient", "MedicationDispense", "Consent"} <= written  # the glob found the templates
        assert written - claimed == set()

    def test_a_parameter_repeated_too_often_is_too_costly(self, loaded):
        """A repeated parameter is ANDed in one query; thousands of them are refused, not sent to the database."""
        response = loaded.get("/Patient", params=[("_id", "x")] * 101)
        assert response.status_code == 400 and response.json()["issue"][0]["code"] == "too-costly"

    def test_a_search_by_post_of_a_form_answers_as_get(self, loaded, log):
        """Review H122: `POST /Patient/_search` (FHIR's search by POST, which a server searching by GET
        SHALL support, and which keeps the fødselsnummer out of URLs) answered 405."""
        form = {"identifier": f"{FNR}|{FNR_VALUE}"}
        response = loaded.post("/Patient/_search", data=form)
        assert response.status_code == 200 and response.json()["total"] == 1
        assert response.json()["entry"][0]["resource"]["id"] == PATIENT_UUID
        assert loaded.post("/Patient/_search", params={"_id": "other"}, data=form).json()["total"] == 0  # URL and form ANDed
        assert loaded.post("/Patient/_search", json=form).status_code == 415
        assert FNR_VALUE not in repr(log.events)
        assert ("fhir_request", {"method": "POST", "path": "/fhir/Patient/_search", "status": 200}) in log.events

    def test_a_read_says_when_the_resource_last_changed(self, loaded):
        """Review H122: a read and a vread carried ETag but no Last-Modified, which FHIR's read
        answers with (a cache's If-Modified-Since needs it); it is meta.lastUpdated as an HTTP date."""
        for path in (f"/Patient/{PATIENT_UUID}", f"/Patient/{PATIENT_UUID}/_history/1"):
            response = loaded.get(path)
            updated = datetime.fromisoformat(response.json()["meta"]["lastUpdated"].replace("Z", "+00:00"))
            assert parsedate_to_datetime(response.headers["last-modified"]) == updated.replace(microsecond=0)
            assert response.headers["etag"] == 'W/"1"'


class TestRestHttpSemantics:
    """Found by review (H177): HTTP and FHIR REST answers a client's library relies on."""

    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [("PUT", "/Patient/x", {"GET", "HEAD"}), ("DELETE", "/Patient", {"GET", "HEAD"}), ("PUT", "", {"POST"}),
         ("POST", "/Patient", {"GET", "HEAD"}), ("DELETE", "/Patient/_search", {"POST"})],
    )
    def test_a_405_names_the_methods_allowed(self, client, method, path, allowed):
        """HTTP requires an Allow header on a 405; it was missing, so a client could not tell what the path takes."""
        response = client.request(method, path, content=b"{}")
        assert response.status_code == 405
        assert {m.strip() for m in response.headers["allow"].split(",")} == allowed

    def test_if_none_match_on_the_current_version_answers_304_without_a_body(self, loaded):
        """A client revalidating its copy (If-None-Match with the read's ETag) got the whole resource again;
        FHIR's conditional read answers 304 Not Modified, and the CapabilityStatement now says so."""
        path = f"/Patient/{PATIENT_UUID}"
        etag = loaded.get(path).headers["etag"]
        for value in (etag, '"1"', f'W/"9", {etag}', "*"):
            response = loaded.get(path, headers={"If-None-Match": value})
            assert (response.status_code, response.content) == (304, b""), value
            assert response.headers["etag"] == etag and "last-modified" in response.headers
        changed = loaded.get(path, headers={"If-None-Match": 'W/"2"'})
        assert changed.status_code == 200 and changed.json()["id"] == PATIENT_UUID
        assert loaded.get(f"{path}/_history/1", headers={"If-None-Match": etag}).status_code == 304
        assert loaded.get("/Patient", headers={"If-None-Match": "*"}).status_code == 200  # a search has no ETag
        patient = next(r for r in loaded.get("/metadata").json()["rest"][0]["resource"] if r["type"] == "Patient")
        assert patient["conditionalRead"] == "not-match"

    def test_lenient_handling_ignores_unknown_search_parameters(self, loaded):
        """`Prefer: handling=lenient` asks the server to ignore parameters it does not know (FHIR R4
        §3.1.1.5.6); such a search was refused 400 all the same. Without it the search stays refused,
        and the links show only the parameters used, so a next page does not fail."""
        params = [("identifier", f"{FNR}|{FNR_VALUE}"), ("_elements", "name"), ("_count", "0")]
        assert loaded.get("/Patient", params=params).status_code == 400
        assert loaded.get("/Patient", params=params, headers={"Prefer": "handling=strict"}).status_code == 400
        response = loaded.get("/Patient", params=params, headers={"Prefer": "return=minimal, handling=lenient"})
        assert response.status_code == 200 and response.json()["total"] == 1
        links = {link["relation"]: link["url"] for link in response.json()["link"]}
        assert "_elements" not in links["self"] and "identifier=" in links["self"]
        body = loaded.get("/Encounter", params=[("_count", "0"), ("foo", "1")], headers={"Prefer": "handling=lenient"}).json()
        assert "foo" not in body["link"][0]["url"]
        next_ = loaded.get("/Encounter", params=[("_count", "1"), ("foo", "1"), ("_id", f"{ENCOUNTER_UUID},x")],
                           headers={"Prefer": "handling=lenient"}).json()
        assert next_["total"] == 1 and all("foo" not in link["url"] for link in next_["link"])

    @pytest.mark.parametrize(
        ("headers", "params", "status"),
        [({"Accept": "application/fhir+xml"}, {}, 406), ({}, {"_format": "xml"}, 406),
         ({"Accept": "application/fhir+json"}, {"_format": "application/fhir+xml"}, 406),
         ({"Accept": "application/fhir+xml, application/fhir+json;q=0"}, {}, 406),
         ({"Accept": "application/fhir+xml;q=1.0, application/json+fhir;q=0.9"}, {}, 200),
         ({"Accept": "text/html,application/xml;q=0.9,*/*;q=0.8"}, {}, 200), ({"Accept": "application/json"}, {"_format": "json"}, 200),
         ({}, {"_format": "application/fhir+json"}, 200)],
    )
    def test_a_client_asking_only_for_xml_gets_406(self, loaded, headers, params, status):
        """This face answers JSON only, and answered it to a client that asked for XML alone (Accept or
        `_format`), whose parser then failed on the body; FHIR answers a format it cannot give 406."""
        response = loaded.get(f"/Patient/{PATIENT_UUID}", params=params, headers=headers)
        assert response.status_code == status
        assert response.headers["content-type"].startswith("application/fhir+json")
        assert response.json()["resourceType"] == ("OperationOutcome" if status == 406 else "Patient")


def _links(bundle):
    return {link["relation"]: link["url"] for link in bundle["link"]}


def _store_patients_with_fnr(client, count):
    """Store *count* patients, each with a fødselsnummer-like identifier; return the values."""
    values = [f"0101500{i:04}" for i in range(count)]
    entries = [
        {"resource": {"resourceType": "Patient", "id": f"p{i}", "identifier": [{"system": FNR, "value": v}]}, "request": {"method": "PUT", "url": f"Patient/p{i}"}}
        for i, v in enumerate(values)
    ]
    assert client.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}).status_code == 200
    return values


class TestPostSearchPages:
    """Review H183: the links of a `POST [type]/_search` Bundle repeated the form's parameters, so
    a client following `next` by GET put the fødselsnummer into a URL after all."""

    def test_no_link_of_a_post_search_names_the_values_searched_by(self, client, log):
        """`self` is `Patient/_search`, `next` a `_getpages` id; its pages are a GET search's."""
        values = _store_patients_with_fnr(client, 5)
        form = {"identifier": ",".join(f"{FNR}|{v}" for v in values), "_count": "2"}
        page = client.post("/Patient/_search", data=form).json()
        assert _links(page)["self"] == str(client.base_url.join("Patient/_search"))
        post_ids, urls = [], []
        while True:
            post_ids += [e["resource"]["id"] for e in page["entry"]]
            urls += [link["url"] for link in page["link"]]
            assert page["total"] == 5
            link = _links(page).get("next")
            if link is None:
                break
            assert "_getpages=" in link
            page = client.get(link).json()
        assert not [u for u in urls if any(v in u for v in values) or "identifier" in u]
        get_ids, page = [], client.get("/Patient", params=form).json()
        while True:
            get_ids += [e["resource"]["id"] for e in page["entry"]]
            if (link := _links(page).get("next")) is None:
                break
            page = client.get(link).json()
        assert post_ids == get_ids == [f"p{i}" for i in range(5)]
        assert not [v for v in values if v in repr(log.events)]

    def test_a_get_search_keeps_its_parameters_in_its_links(self, client):
        """The contract for GET: `self` repeats the search, `next` adds `_after`."""
        values = _store_patients_with_fnr(client, 3)
        links = _links(client.get("/Patient", params={"identifier": f"{FNR}|", "_count": "2"}).json())
        assert "identifier=" in links["self"] and "_getpages" not in links["next"]
        assert "_after=p1" in links["next"] and values[0] not in links["next"]

    @pytest.mark.parametrize("query", ["_getpages=unknown", "_getpages=unknown&_after=p1", "_getpages="])
    def test_an_unknown_page_id_is_gone(self, client, query):
        """An id this process never made (or another process made) answers 410, as HAPI does."""
        _store_patients_with_fnr(client, 1)
        response = client.get(f"?{query}")
        assert response.status_code == 410 and response.json()["resourceType"] == "OperationOutcome"

    def test_an_expired_page_id_is_gone(self, settings):
        """A search is kept for `ttl` seconds after its last page was asked for, then answers 410."""
        now = [0.0]
        server = make_server(lambda: open_record(settings), "127.0.0.1", 0, pages=SearchPages(ttl=60, limit=10, clock=lambda: now[0]))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
        thread.start()
        try:
            with httpx.Client(base_url=server.base_url) as http:
                _store_patients_with_fnr(http, 3)
                link = _links(http.post("/Patient/_search", data={"identifier": f"{FNR}|", "_count": "1"}).json())["next"]
                now[0] = 59.0
                assert http.get(link).status_code == 200  # and its use keeps it another 60 s
                now[0] = 118.0
                assert http.get(link).status_code == 200
                now[0] = 179.0
                assert http.get(link).status_code == 410
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


class TestSearchPagesStore:
    """The page ids' map is bounded: past its limit, the oldest search is forgotten (410)."""

    def test_the_oldest_is_dropped_past_the_limit(self):
        """Ids are random (not derived from the values), and at most `limit` searches are kept."""
        pages = SearchPages(ttl=60, limit=2, clock=lambda: 0.0)
        ids = [pages.keep("Patient", f"identifier=x{i}") for i in range(3)]
        assert len(set(ids)) == 3 and all(len(i) >= 32 for i in ids)
        assert [pages.find(i) for i in ids] == [None, ("Patient", "identifier=x1"), ("Patient", "identifier=x2")]


class TestRestReviewH190:
    """Found by review (H190): the REST face's leftovers."""

    @pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/fhir+xml", "application/x-www-form-urlencoded"])
    def test_a_transaction_that_is_not_fhir_json_answers_415(self, client, content_type):
        """A transaction POSTed with a Content-Type other than FHIR JSON was parsed and applied as JSON
        all the same; as `POST [type]/_search` does for a body that is not a form, it answers 415 now."""
        import orjson

        response = client.post("", content=orjson.dumps(transaction()), headers={"content-type": content_type})
        assert response.status_code == 415 and response.json()["resourceType"] == "OperationOutcome"
        assert response.json()["issue"][0]["code"] == "not-supported"
        assert client.get(f"/Patient/{PATIENT_UUID}").status_code == 404  # nothing was applied
        for accepted in ("application/fhir+json", "application/json; charset=utf-8", "application/json+fhir"):
            assert client.post("", content=orjson.dumps(transaction()), headers={"content-type": accepted}).status_code == 200

    def test_the_capability_statement_describes_searching_by_post_and_its_pages(self, loaded):
        """The statement said search-type and nothing of how: not that a search may be POSTed to
        [type]/_search, nor that its next pages are `[base]?_getpages=` links, nor `_count`'s bounds.
        A client reading it now finds each, and each works as it says."""
        patient = next(r for r in loaded.get("/metadata").json()["rest"][0]["resource"] if r["type"] == "Patient")
        search = next(i for i in patient["interaction"] if i["code"] == "search-type")
        for said in ("POST [type]/_search", "_getpages", "_count", "1000", "410"):
            assert said in search["documentation"], said
        loaded.post("", json={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": f"p{i}"}, "request": {"method": "PUT", "url": f"Patient/p{i}"}} for i in range(2)]})
        first = loaded.post("/Patient/_search", data={"_count": "1"}).json()
        nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
        assert "_getpages=" in nxt and loaded.get(nxt).status_code == 200
