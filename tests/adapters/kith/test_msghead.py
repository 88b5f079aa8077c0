"""Tests for adapters/kith/msghead.py: the MsgHead reader on national examples."""

from __future__ import annotations

import pytest
from lxml import etree

from adapters.kith.errors import SchemaInvalid
from adapters.kith.msghead import read_msghead

from .conftest import PLO_16

STATUS = "Dialogmelding/Dialogmelding-v1-1/Status_paa_henvisning-InnkaltEtterViderehenvisning.xml"
WITH_PDF = "Dialogmelding/Dialogmelding-v1-1/Helsefaglig dialog.xml"


class TestReadMsghead:
    def test_header(self, example):
        """Type, MsgId, GenDate, MIGversion and the payload come from MsgInfo and Content."""
        env = read_msghead(etree.fromstring(example(PLO_16)))
        assert (env.kind, env.msg_type, env.msg_id) == ("MsgHead", "LOG_UTSKRIVNINGSKLAR", "79c55ed0-0692-11e8-b566-0800200c9a66")
        assert env.gen_date == "2018-01-31T10:20:11"
        assert env.mig_version == "v1.2 2006-05-24"
        assert (env.payload_namespace, env.payload_root, env.payload_version) == ("http://www.kith.no/xmlstds/po/Pasientlogistikk/2012-04-01", "Pasientlogistikk", "1.6")
        assert env.payload is not None and etree.QName(env.payload).localname == "Pasientlogistikk"

    def test_parties(self, example):
        """Sender and receiver keep their nested Organisation as a department, with Idents."""
        env = read_msghead(etree.fromstring(example(PLO_16)))
        assert env.sender is not None and env.receiver is not None
        assert env.sender.name == "ST OLAVS HOSPITAL HF"
        assert [(i.id, i.type, i.system) for i in env.sender.idents] == [("59", "HER", "2.16.578.1.12.4.1.1.9051")]
        assert [d.name for d in env.sender.depts] == ["Ortopedisk kirurgi"]
        assert (env.sender.her_id, env.receiver.her_id, env.receiver.role) == ("90998", "5078", "PRIM")

    def test_patient_idents(self, example):
        """The patient's Idents are read, with their type."""
        env = read_msghead(etree.fromstring(example(PLO_16)))
        assert [(i.id, i.type) for i in env.patient_idents] == [("15076500565", "FNR")]

    def test_other_receiver_and_conversation(self, example):
        """OtherReceiver becomes a COP party with its professional; ConversationRef is read."""
        env = read_msghead(etree.fromstring(example(STATUS)))
        (copy,) = env.other_receivers
        assert (copy.role, copy.name, copy.her_id) == ("COP", "Kattskinnet legesenter", "258521")
        assert copy.persons[0].name == "Rita Lin"
        assert env.conversation is not None
        assert env.conversation.ref_to_parent == "810200d0-2d17-11e8-b566-0800200c9a66"
        assert env.conversation.ref_to_conversation == "87ef6130-2d17-11e8-b566-0800200c9a66"
        assert [p.role for p in env.recipients] == ["PRIM", "COP"]

    @pytest.mark.parametrize("role", ["OR", "FR"])
    def test_an_original_or_forwarded_recipient_is_not_answered_for(self, example, role):
        """Session 22: an OtherReceiver whose RoleReceiver is OR or FR (8112) did not receive this copy: no AppRec in its name."""
        from adapters.kith.apprec import build_apprecs

        data = example(STATUS).replace(b'V="COP"', f'V="{role}"'.encode(), 1)
        assert f'V="{role}"'.encode() in data
        env = read_msghead(etree.fromstring(data))
        assert env.other_receivers == () and [p.role for p in env.recipients] == ["PRIM"]
        assert [a.role for a in build_apprecs(env, error=None)] == ["PRIM"]

    def test_attachment(self, example):
        """A Base64Container document becomes an attachment with its MIME type, bytes and description."""
        env = read_msghead(etree.fromstring(example(WITH_PDF)))
        (pdf,) = env.attachments
        assert pdf.mime_type == "application/pdf"
        assert pdf.description == "EKG-2017-06-12"
        assert pdf.data.startswith(b"%PDF")
        assert etree.QName(env.payload).localname == "Dialogmelding"
        assert "http://www.kith.no/xmlstds/base64container" in env.schema_namespaces

    def test_bad_base64(self, example):
        """An attachment that is not base64 is SchemaInvalid (T02); without decoding it is skipped."""
        root = etree.fromstring(example(WITH_PDF))
        container = root.find(".//{http://www.kith.no/xmlstds/base64container}Base64Container")
        container.text = "not base64 at all!"
        with pytest.raises(SchemaInvalid):
            read_msghead(root)
        assert read_msghead(root, attachments=False).attachments == ()

    def test_first_sender_with_an_organisation(self):
        """Comments and PIs among the children change nothing; the sender is the first Sender's Organisation that exists."""
        ns = "http://www.kith.no/xmlstds/msghead/2006-05-24"
        root = etree.fromstring(f"""<MsgHead xmlns="{ns}"><!-- c --><MsgInfo><?pi x?><Type V="T" DN="Tn"/><Type V="U"/>
            <MsgId> id </MsgId><Sender/><Sender><!-- c --><Organisation><OrganisationName>A</OrganisationName>
            <Ident><Id>1</Id><TypeId V="HER"/></Ident><Organisation><OrganisationName>B</OrganisationName></Organisation></Organisation>
            <Organisation><OrganisationName>C</OrganisationName></Organisation></Sender></MsgInfo></MsgHead>""".encode())
        env = read_msghead(root)
        assert (env.msg_type, env.msg_type_name, env.msg_id) == ("T", "Tn", "id")
        assert env.sender is not None and (env.sender.name, env.sender.her_id, [d.name for d in env.sender.depts]) == ("A", "1", ["B"])

    def test_empty_msghead(self):
        """A MsgHead with no MsgInfo reads as empty strings and no parties, without raising."""
        env = read_msghead(etree.fromstring(b'<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"/>'))
        assert (env.msg_id, env.sender, env.receiver, env.payload) == ("", None, None, None)
