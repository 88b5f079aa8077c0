"""Through the queue: every KITH message is answered with an AppRec per recipient, once."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from adapters.fhir.record import open_record
from router.testing import drain_queue, publish, wait_until

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "mappings" / "kith" / "messages" / "Dialogmelding.cases" / "helsefaglig_dialog.xml"
MSG_ID = "3f2b6f0e-8f1c-4c55-9a59-2f3d7d1c0a01"
LIB = ROOT / "mappings" / "kith" / "messages" / "ERM25.cases" / "pll_med_seponering.xml"
AR = "{http://www.kith.no/xmlstds/apprec/2012-02-15}"


def _apprecs(settings, her_id: str) -> list[etree._Element]:
    queue = f"{settings.engine.broker.names.apprec_prefix}.{her_id}"
    return [etree.fromstring(body) for _headers, body in drain_queue(settings, queue)]


class TestAppRecFlow:
    def test_positive_apprec_after_commit_and_none_for_a_duplicate(self, engine):
        """A good message is applied and answered OK; the same MsgId again changes nothing and gets no second AppRec."""
        settings, handle = engine
        publish(settings, [CASE.read_bytes()])
        wait_until(lambda: handle.stats.applied == 1, timeout=30, what="applied")
        [apprec] = _apprecs(settings, "112233")
        assert apprec.find(f"{AR}Status").get("V") == "1"  # Status is required: an AppRec without one is no answer
        assert apprec.find(f"{AR}Error") is None
        assert apprec.find(f"{AR}OriginalMsgId/{AR}Id").text == MSG_ID
        record = open_record(settings)
        try:
            [comm] = record.search("Communication", {"identifier": f"urn:ietf:rfc:3986|urn:uuid:{MSG_ID}"})
            version = comm["meta"]["versionId"]
            publish(settings, [CASE.read_bytes()])
            wait_until(lambda: handle.stats.duplicates == 1, timeout=30, what="duplicate seen")
            assert _apprecs(settings, "112233") == []
            assert record.read("Communication", comm["id"])["meta"]["versionId"] == version
        finally:
            record.close()

    def test_non_uuid_msgid_is_answered_e10_and_dead_lettered(self, engine):
        """A MsgId that is not a UUID is refused with AppRec E10 to its sender."""
        settings, handle = engine
        publish(settings, [CASE.read_bytes().replace(MSG_ID.encode(), b"melding-1")])
        wait_until(lambda: handle.stats.dead_lettered == 1, timeout=30, what="dead-lettered")
        [apprec] = _apprecs(settings, "112233")
        assert apprec.find(f"{AR}Status").get("V") == "2"
        assert apprec.find(f"{AR}Error").get("V") == "E10"

    def test_a_sender_her_id_that_is_no_number_does_not_name_a_queue(self, engine):
        """A HER-id is a number in NHN's Adresseregisteret; a sender Ident typed HER with 300 characters must neither
        break the reply (an AMQP queue name holds at most 255 bytes) nor declare a queue of its own: the AppRec goes
        to `unknown`, and the message is applied as it would be without that Ident."""
        settings, handle = engine
        publish(settings, [CASE.read_bytes().replace(b"<Id>112233</Id>", b"<Id>" + b"9" * 300 + b"</Id>")])
        wait_until(lambda: handle.stats.messages == 1, timeout=30, what="settled")
        assert handle.stats.applied == 1
        [apprec] = _apprecs(settings, "unknown")
        assert apprec.find(f"{AR}Status").get("V") == "1"

    def test_two_copies_in_one_batch_get_one_apprec(self, engine):
        """The same MsgId twice, arriving together, is answered once (HITS 1168 §5.4): the second copy is a duplicate
        even when the first one's AppRec is not confirmed yet, as for an HL7 control id within one batch."""
        settings, handle = engine
        publish(settings, [CASE.read_bytes(), CASE.read_bytes()])
        wait_until(lambda: handle.stats.messages == 2, timeout=30, what="both settled")
        assert handle.stats.duplicates == 1
        assert len(_apprecs(settings, "112233")) == 1

    def test_malformed_xml_is_answered_t01(self, engine):
        """XML that is not well-formed gets a negative AppRec T01 and lands in the DLQ."""
        settings, handle = engine
        publish(settings, [b"<MsgHead><MsgInfo></MsgHead>"])
        wait_until(lambda: handle.stats.dead_lettered == 1, timeout=30, what="dead-lettered")
        [apprec] = _apprecs(settings, "unknown")
        assert [e.get("V") for e in apprec.iter() if e.tag.endswith("Error")] == ["T01"]

    def test_a_patient_not_identified_well_enough_is_answered_e36(self, engine):
        """A patient with a name but neither a national id nor date of birth and sex is refused with AppRec E36."""
        settings, handle = engine
        body = CASE.read_bytes().replace(b'<Ident><Id>15866112379</Id><TypeId V="FNR" DN="F\xc3\xb8dselsnummer" S="2.16.578.1.12.4.1.1.8116"/></Ident>', b"")
        assert b"15866112379" not in body
        publish(settings, [body])
        wait_until(lambda: handle.stats.dead_lettered == 1, timeout=30, what="dead-lettered")
        [apprec] = _apprecs(settings, "112233")
        assert apprec.find(f"{AR}Status").get("V") == "2"
        assert apprec.find(f"{AR}Error").get("V") == "E36"

    def test_a_prescription_in_a_list_of_medicines_in_use_that_is_not_base64_is_answered_t02(self, engine):
        """An M25.1 whose second entry's ReseptDokLegemiddelB64 is not base64 is dead-lettered, nothing applied, and its
        sender gets AppRec T02 naming that element."""
        settings, handle = engine
        body = LIB.read_bytes()
        open_tag, close_tag = b"<ReseptDokLegemiddelB64>", b"</ReseptDokLegemiddelB64>"
        start = body.index(open_tag, body.index(open_tag) + 1) + len(open_tag)
        publish(settings, [body[:start] + b"ikke base64!" + body[body.index(close_tag, start):]])
        wait_until(lambda: handle.stats.dead_lettered == 1, timeout=30, what="dead-lettered")
        assert handle.stats.applied == 0
        [apprec] = _apprecs(settings, "112233")  # AppRec 1.0, as for every e-resept message (HITS 1168 §8.3)
        assert apprec.find("{*}Status").get("V") == "2"
        error = apprec.find("{*}Error")
        assert error.get("V") == "T02"
        assert "/LegemidlerIBruk/EnkeltoppforingLIB[2]/ReseptDokLegemiddelB64" in error.get("OT")


def test_kith_window_days_zero_answers_a_resent_copy_again(tmp_path):
    """routes.yaml `duplicates.kith_window_days: 0` turns the MsgId guard off: the same message twice gets two AppRecs,
    and the record still applies its bytes once (the second settles as already applied)."""
    from router.testing import isolated_settings, run_engine_in_thread

    routes = {"destinations": {"record": {"kind": "record"}}, "routes": [{"name": "default", "to": ["record"]}],
              "duplicates": {"kith_window_days": 0}}
    settings = isolated_settings(tmp_path, routes=routes)
    assert settings.routes.duplicates.kith_window_days == 0
    handle = run_engine_in_thread(settings)
    try:
        publish(settings, [CASE.read_bytes()])
        wait_until(lambda: handle.stats.applied == 1, timeout=30, what="applied")
        publish(settings, [CASE.read_bytes()])
        wait_until(lambda: handle.stats.messages == 2, timeout=30, what="the copy settled")
        assert handle.stats.duplicates == 0 and handle.stats.dead_lettered == 0
    finally:
        handle.stop()
    assert len(_apprecs(settings, "112233")) == 2
