"""Dialogmelding (review H207): the professionals a dialogue message names reach FHIR.

The national examples (../shared, skipped without it) are converted through `helsebro convert`.
RollerRelatertNotat names who writes (HPR-nummer, role towards the patient, profession, phone)
and who is wanted at the receiver (RoleToPatient 24, "angi profesjon hos mottaker"); MsgHead's
Receiver//HealthcareProfessional names the person the message is addressed to.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from router.cli import main

HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
HER = "urn:oid:2.16.578.1.12.4.1.2"
URI = "urn:ietf:rfc:3986"
MH = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"


def _convert(capsys, monkeypatch, shared: Path, name: str) -> dict:
    monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared / "norsk" / "skjema"))
    path = shared / "norsk" / "eksempel" / "Dialogmelding" / name
    assert main(["convert", str(path)]) == 0
    [doc] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert doc["resourceType"] == "Bundle", doc
    return {e["fullUrl"]: e["resource"] for e in doc["entry"]}


def _one(resources: dict, kind: str) -> dict:
    [res] = [r for r in resources.values() if r["resourceType"] == kind]
    return res


def _codes(role: dict) -> set[tuple[str, str]]:
    return {(c["system"].rsplit(".", 1)[-1], c["code"]) for cc in role["code"] for c in cc["coding"]}


class TestDialogmeldingProfessionals:
    def test_the_asking_nurse_is_the_sender_and_the_gp_a_recipient(self, shared_dir, capsys, monkeypatch):
        res = _convert(capsys, monkeypatch, shared_dir, "Dialogmelding-v1-0/Dialogmelding_foresporsel_PLO_v1-0.xml")
        comm, req = _one(res, "Communication"), _one(res, "CommunicationRequest")
        role = res[comm["sender"]["reference"]]
        assert role["resourceType"] == "PractitionerRole"
        assert _codes(role) == {("9060", "SP"), ("9034", "9")}
        assert role["telecom"] == [{"system": "phone", "value": "72727272"}]
        nurse = res[role["practitioner"]["reference"]]
        assert nurse["identifier"] == [{"system": HPR, "value": "9876543"}]
        assert res[role["organization"]["reference"]]["name"] == "Sykepleietjeneste"
        assert req["requester"] == comm["sender"]
        gp = [res[r["reference"]] for r in comm["recipient"] if res[r["reference"]]["resourceType"] == "Practitioner"]
        assert [p["identifier"] for p in gp] == [[{"system": HER, "value": "91101"}]]
        assert any(r["reference"] in {u for u, p in res.items() if p is gp[0]} for r in req["recipient"])

    def test_the_answering_gp_is_the_sender(self, shared_dir, capsys, monkeypatch):
        res = _convert(capsys, monkeypatch, shared_dir, "Dialogmelding-v1-0/Dialogmelding_svar_foresporsel_PLO_v1-0.xml")
        role = res[_one(res, "Communication")["sender"]["reference"]]
        assert _codes(role) == {("9060", "LE"), ("9034", "6")}
        assert res[role["practitioner"]["reference"]]["identifier"] == [{"system": HPR, "value": "9144900"}]

    def test_the_profession_wanted_at_the_receiver_is_a_recipient(self, shared_dir, capsys, monkeypatch):
        res = _convert(capsys, monkeypatch, shared_dir, "Dialogmelding-v1-1/Helsefaglig dialog_angi profesjon hos mottaker.xml")
        comm = _one(res, "Communication")
        roles = [res[r["reference"]] for r in comm["recipient"] if res[r["reference"]]["resourceType"] == "PractitionerRole"]
        assert [_codes(r) for r in roles] == [{("9060", "FT"), ("9034", "24")}]
        assert "practitioner" not in roles[0]
        assert res[roles[0]["organization"]["reference"]]["name"] == "Ortopedisk kirurgi"
        sender = res[comm["sender"]["reference"]]
        assert res[sender["practitioner"]["reference"]]["identifier"] == [{"system": HPR, "value": "258521"}]


class TestDialogmeldingConversation:
    """MsgHead ConversationRef/RefToConversation (the dialog, the first message's MsgId) is kept."""

    @pytest.mark.parametrize("name", [
        "Dialogmelding-v1-0/Dialogmelding_svar_foresporsel_PLO_v1-0.xml",
        "Dialogmelding-v1-0/Dialogmelding_avvik_v1-0.xml",
        "Dialogmelding-v1-1/Helsefaglig dialog.xml",
        "Dialogmelding-v1-1/Status_paa_henvisning-InnkaltEtterViderehenvisning.xml",
    ])
    def test_the_conversation_is_a_typed_identifier_beside_the_msgid(self, shared_dir, capsys, monkeypatch, name):
        info = ET.parse(shared_dir / "norsk" / "eksempel" / "Dialogmelding" / name).getroot().find(f"{MH}MsgInfo")
        msg_id = info.findtext(f"{MH}MsgId").strip().lower()
        conversation = info.findtext(f"{MH}ConversationRef/{MH}RefToConversation").strip().lower()
        res = _convert(capsys, monkeypatch, shared_dir, name)
        comm = _one(res, "Communication")
        # The MsgId stays first, the identity: the conditional update and the id do not move.
        assert comm["identifier"][0] == {"system": URI, "value": f"urn:uuid:{msg_id}"}
        assert comm["identifier"][1:] == [{"type": {"text": "conversation"}, "value": f"urn:uuid:{conversation}"}]

    def test_a_first_message_has_its_msgid_alone(self, shared_dir, capsys, monkeypatch):
        res = _convert(capsys, monkeypatch, shared_dir, "Dialogmelding-v1-0/Dialogmelding_foresporsel_PLO_v1-0.xml")
        # A first message has no ConversationRef: its MsgId alone identifies it.
        assert [len(_one(res, kind)["identifier"]) for kind in ("Communication", "CommunicationRequest")] == [1, 1]
