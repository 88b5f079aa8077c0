"""Tests for adapters/kith/message.py: Message roots and standalone AppRecs."""

from __future__ import annotations

from lxml import etree

from adapters.kith.message import read_apprec, read_message_root

EPIKRISE_11 = "Epikrise/Epikrise_v1-1/epikrise_v1.1_n.xml"
HENVISNING_10 = "Henvisning/Henvisning_v1-0/henvisning_v1.0_n.xml"
SVAR_13 = "Svarrapport/Svarrapport-v-1-3/Svar_biokjemi_v1-3_Ny.xml"


class TestReadMessageRoot:
    def test_report_goes_from_provider(self, example):
        """An Epikrise (ServRprt) goes from the ServProvider to the Requester, with CopyDest as copies."""
        env = read_message_root(etree.fromstring(example(EPIKRISE_11)))
        assert (env.kind, env.msg_type, env.msg_id) == ("Message", "E", "e3332f10-46ca-11e7-9598-0800200c9a66")
        assert env.gen_date == "2017-05-05T06:24:09"
        assert env.sender is not None and env.sender.her_id == "94866"
        assert env.receiver is not None and (env.receiver.her_id, env.receiver.role) == ("91439", "PRIM")
        assert [(c.role, c.her_id) for c in env.other_receivers] == [("COP", "95136")]
        assert env.payload_version == "1.1"

    def test_request_goes_from_requester(self, example):
        """A Henvisning 1.0 (ServReq) goes from the Requester to the ServProvider."""
        env = read_message_root(etree.fromstring(example(HENVISNING_10)))
        assert env.sender is not None and env.sender.name == "Kattskinnet legesenter"
        assert env.receiver is not None and env.receiver.name == "ST OLAVS HOSPITAL HF"
        assert [d.name for d in env.receiver.depts] == ["Ortopedisk kirurgi"]

    def test_patient_and_persons(self, example):
        """The patient's OffId is read; HCPerson becomes a person of the institution."""
        env = read_message_root(etree.fromstring(example(SVAR_13)))
        assert [(i.id, i.type) for i in env.patient_idents] == [("13116900216", "FNR")]
        assert env.receiver is not None and env.receiver.persons[0].name == "Rita Lin"
        assert env.payload is env.document


class TestReadApprec:
    def test_standalone(self, norsk):
        """A standalone AppRec reads its Id, the OriginalMsgId it answers and its parties."""
        root = etree.parse(str(norsk / "eksempel" / "NPRbehandlerkravmelding" / "apprec-eksempel.xml")).getroot()
        env = read_apprec(root)
        assert (env.kind, env.msg_type, env.payload_version) == ("AppRec", "APPREC", "1.0")
        assert env.conversation is not None and env.conversation.ref_to_parent == "1b08b3f5-76c1-4560-ae4e-90e04cb0bc70"
        assert env.sender is not None and env.sender.name == "ARBEIDS- OG VELFERDSETATEN"
        assert [d.name for d in env.sender.depts] == ["Kontrollsystem"]
