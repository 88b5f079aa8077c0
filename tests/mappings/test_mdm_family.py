"""The whole MDM family in the record: replacements, cancels, status changes, edits, and a document's text.

A replacement (T09, T10) is a new document (its TXA-12) that replaces its parent
(TXA-13): the parent becomes superseded in the record. A cancel (T11) retires the
document (entered-in-error); a status change or edit without content (T03, T07)
changes its status and completion status only, and one with content (T04, T08)
writes it again. A TX document sent one line per OBX, or one line per OBX-5
repetition, is one text attachment with its lines, as the v2-to-FHIR IG's
OBX[DocumentReference] says ("each repeat yields a line feed"). Messages go through
the Converter and SQLite record; synthetic Norwegian people only (Tenor-style fødselsnummer).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from router.errors import InvalidContent
from router.testing import one_bundle as _one

PATIENT, OTHER = "31929945681", "15866112379"
MSH = "MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|STOLAV|20250112150000||{type}|{ctrl}|P|2.5.1|||AL|NE|NOR|UNICODE UTF-8"
TEXT = ("OBX|1|TX|EPIKRISE^Epikrise^L||Utskrevet i god form.||||||F",)
PDF = "OBX|{n}|ED|PDF^Epikrise PDF^L||DIPS^AP^PDF^Base64^JVBERi0xLjQK||||||F"


def _mdm(event: str, structure: str, *, number: str = "DOK-1", parent: str = "", completion: str = "LA", availability: str = "AV",
         confidentiality: str = "", obx: tuple[str, ...] = (), patient: str = PATIENT) -> bytes:
    segments = (
        MSH.format(type=f"MDM^{event}^{structure}" if structure else f"MDM^{event}", ctrl=f"MDM-{event}-{number}"),
        f"EVN|{event}|20250112150000",
        f"PID|1||{patient}^^^NOR^FNR||HANSEN^KARI||19921231|F",
        "PV1|1|I",
        f"TXA|1|EPIKRISE^Epikrise^L|TX|20250112143000||20250112143000||||||{number}^DIPS|{parent}|||epikrise.txt|{completion}|"
        f"{confidentiality}|{availability}||||||Epikrise",
        *obx,
    )
    return ("\r".join(segments) + "\r").encode("utf-8")


def _document(bundle: dict) -> dict:
    [doc] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    return doc


@pytest.fixture
def record(tmp_path):
    from adapters.fhir.record import open_record
    from router.settings import Settings

    rec = open_record(Settings(record_url=f"sqlite:///{tmp_path}/record.sqlite3", data_dir=tmp_path / "data"))
    try:
        yield rec
    finally:
        rec.close()


def _stored(record) -> dict[str, dict]:
    """The record's DocumentReferences by their TXA-12 number."""
    return {d["masterIdentifier"]["value"]: d for d in record.search("DocumentReference", {})}


class TestReplacement:
    @pytest.mark.parametrize(("event", "structure", "obx"), [("T10", "MDM_T02", TEXT), ("T09", "MDM_T01", ())])
    def test_a_replacement_supersedes_its_parent(self, converter, record, event, structure, obx):
        """T09/T10: the new document replaces TXA-13, and the parent the record holds becomes superseded, its content kept."""
        record.apply(_one(converter, _mdm("T02", "MDM_T02", obx=TEXT)))
        record.apply(_one(converter, _mdm(event, structure, number="DOK-2", parent="DOK-1^DIPS", obx=obx)))
        docs = _stored(record)
        assert docs["DOK-1"]["status"] == "superseded"
        assert docs["DOK-1"]["content"][0]["attachment"]["data"]  # only the status changed
        assert docs["DOK-2"]["status"] == "current"
        assert docs["DOK-2"]["relatesTo"][0]["code"] == "replaces"

    def test_a_replacement_of_a_document_the_record_lacks_is_applied(self, converter, record):
        """The parent may never have reached the record: the replacement is written all the same, and nothing more."""
        record.apply(_one(converter, _mdm("T10", "MDM_T02", number="DOK-2", parent="DOK-1^DIPS", obx=TEXT)))
        assert set(_stored(record)) == {"DOK-2"}

    def test_an_addendum_leaves_its_parent_current(self, converter, record):
        """T06 appends: the parent stays current."""
        record.apply(_one(converter, _mdm("T02", "MDM_T02", obx=TEXT)))
        record.apply(_one(converter, _mdm("T06", "MDM_T02", number="DOK-2", parent="DOK-1^DIPS", obx=TEXT)))
        assert _stored(record)["DOK-1"]["status"] == "current"

    def test_a_replacement_never_supersedes_another_patients_document(self, converter, record):
        """A TXA-13 naming another patient's document refuses the replacement whole."""
        record.apply(_one(converter, _mdm("T02", "MDM_T02", obx=TEXT, patient=OTHER)))
        with pytest.raises(InvalidContent):
            record.apply(_one(converter, _mdm("T10", "MDM_T02", number="DOK-2", parent="DOK-1^DIPS", obx=TEXT)))
        assert _stored(record)["DOK-1"]["status"] == "current"


class TestChangesWithoutContent:
    @pytest.mark.parametrize("structure", ["MDM_T01", ""])
    def test_a_cancel_retires_the_document(self, converter, record, structure):
        """T11 (also without MSH-9.3) makes the stored document entered-in-error; its content stays in the record."""
        record.apply(_one(converter, _mdm("T02", "MDM_T02", obx=TEXT)))
        record.apply(_one(converter, _mdm("T11", structure, completion="CA")))
        [doc] = _stored(record).values()
        assert (doc["status"], doc["docStatus"]) == ("entered-in-error", "entered-in-error")
        assert doc["content"][0]["attachment"]["data"]

    def test_a_cancel_of_a_document_the_record_lacks_is_refused(self, converter, record):
        """A T11 before its document: refused (dead letter, replayable), never a live document arriving after its cancel."""
        with pytest.raises(InvalidContent):
            record.apply(_one(converter, _mdm("T11", "MDM_T01", completion="CA")))

    @pytest.mark.parametrize("event", ["T03", "T07"])
    def test_a_status_change_changes_only_the_status(self, converter, record, event):
        """T03/T07: TXA-17 and TXA-19 reach the stored document; its content and the rest stay."""
        record.apply(_one(converter, _mdm("T02", "MDM_T02", completion="IP", obx=TEXT)))
        record.apply(_one(converter, _mdm(event, "", completion="AU", availability="OB")))
        [doc] = _stored(record).values()
        assert (doc["status"], doc["docStatus"]) == ("superseded", "final")
        assert doc["content"][0]["attachment"]["data"]


class TestChangesWithContent:
    @pytest.mark.parametrize("event", ["T04", "T08"])
    def test_a_change_with_content_writes_the_same_document(self, converter, record, event):
        """T04/T08 (MDM_T02) write the document of TXA-12 again, with the new content and status."""
        record.apply(_one(converter, _mdm("T02", "MDM_T02", completion="IP", obx=TEXT)))
        new = ("OBX|1|TX|EPIKRISE^Epikrise^L||Ny tekst.||||||F",)
        record.apply(_one(converter, _mdm(event, "", completion="AU", obx=new)))
        [doc] = _stored(record).values()
        assert doc["docStatus"] == "final"
        assert base64.b64decode(doc["content"][0]["attachment"]["data"]).decode() == "Ny tekst."


def _texts(doc: dict) -> list[tuple[str, str]]:
    return [(c["attachment"]["contentType"], base64.b64decode(c["attachment"]["data"]).decode()) for c in doc["content"]]


class TestText:
    def test_repetitions_of_one_obx_are_the_lines_of_one_attachment(self, converter):
        """OBX-5 repeated: every repetition is a line; the second was lost."""
        doc = _document(_one(converter, _mdm("T02", "MDM_T02", obx=("OBX|1|TX|EPIKRISE^Epikrise^L||Linje en~Linje to||||||F",))))
        assert _texts(doc) == [("text/plain; charset=utf-8", "Linje en\nLinje to")]

    def test_one_line_per_obx_is_one_attachment(self, converter):
        """Several TX OBX are one document's lines: one attachment, not one per line."""
        obx = ("OBX|1|TX|EPIKRISE^Epikrise^L||Linje en||||||F", "OBX|2|TX|EPIKRISE^Epikrise^L||Linje to~Linje tre||||||F",
               "OBX|3|TX|EPIKRISE^Epikrise^L||Linje \\T\\ fire||||||F")
        doc = _document(_one(converter, _mdm("T02", "MDM_T02", obx=obx)))
        assert _texts(doc) == [("text/plain; charset=utf-8", "Linje en\nLinje to\nLinje tre\nLinje & fire")]
        assert doc["content"][0]["attachment"]["title"] == "Epikrise"

    def test_text_beside_a_pdf_keeps_both(self, converter):
        """A text OBX and an ED PDF are two attachments, the text with all its lines."""
        obx = ("OBX|1|TX|EPIKRISE^Epikrise^L||Linje en~Linje to||||||F", PDF.format(n=2))
        doc = _document(_one(converter, _mdm("T02", "MDM_T02", obx=obx)))
        assert [c["attachment"]["contentType"] for c in doc["content"]] == ["text/plain; charset=utf-8", "application/pdf"]
        assert base64.b64decode(doc["content"][0]["attachment"]["data"]).decode() == "Linje en\nLinje to"


class TestConfidentiality:
    def test_txa_18_is_the_security_label(self, converter):
        """TXA-18 (table 0272) is the document's securityLabel, as the IG's DocumentConfidentialityStatus map says."""
        doc = _document(_one(converter, _mdm("T02", "MDM_T02", confidentiality="R", obx=TEXT)))
        assert doc["securityLabel"] == [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0272", "code": "R", "display": "Restricted"}]}
        ]


class TestWrongPatient:
    def test_a_document_cancelled_for_the_wrong_patient_may_be_sent_for_the_right_one(self, converter, record):
        """T11 under the patient it was filed to wrongly, then the same document (TXA-12) for the right patient: written for them."""
        record.apply(_one(converter, _mdm("T02", "MDM_T02", obx=TEXT, patient=OTHER)))
        record.apply(_one(converter, _mdm("T11", "MDM_T01", completion="CA", patient=OTHER)))
        record.apply(_one(converter, _mdm("T02", "MDM_T02", obx=TEXT)))
        [doc] = _stored(record).values()
        [patient] = [p for p in record.search("Patient", {}) if p["identifier"][0]["value"] == PATIENT]
        assert (doc["status"], doc["subject"]) == ("current", {"reference": f"Patient/{patient['id']}"})

    def test_a_live_document_of_another_patient_is_never_taken(self, converter, record):
        """Without the cancel, the same TXA-12 for another patient is refused: the document stays with its patient."""
        record.apply(_one(converter, _mdm("T02", "MDM_T02", obx=TEXT, patient=OTHER)))
        with pytest.raises(InvalidContent):
            record.apply(_one(converter, _mdm("T02", "MDM_T02", obx=TEXT)))


class TestCompletion:
    @pytest.mark.parametrize(("completion", "doc_status"), [("DO", "preliminary"), ("PA", "preliminary"), ("AU", "final"), ("LA", "final")])
    def test_only_an_authenticated_document_is_final(self, converter, completion, doc_status):
        """Table 0271: DO (documented: received, not yet in its final electronic form) is no final document."""
        doc = _document(_one(converter, _mdm("T02", "MDM_T02", completion=completion, obx=TEXT)))
        assert doc["docStatus"] == doc_status


class TestSelfReference:
    @pytest.mark.parametrize(("event", "structure", "obx"), [("T10", "MDM_T02", TEXT), ("T06", "MDM_T02", TEXT), ("T09", "MDM_T01", ())])
    def test_a_document_that_names_itself_as_its_parent_is_refused(self, converter: Any, event: str, structure: str, obx: tuple[str, ...]) -> None:
        """TXA-13 = TXA-12: a document cannot replace or append to itself; refused, saying so, never superseding itself."""
        [item] = converter.convert(_mdm(event, structure, number="DOK-1", parent="DOK-1^DIPS", obx=obx))
        assert item.bundle is None
        assert isinstance(item.error, InvalidContent)
        assert "names itself as the document it" in item.error.reason

    def test_a_parent_of_another_number_is_still_replaced(self, converter: Any) -> None:
        """Only the same number is refused: TXA-13 DOK-1 for TXA-12 DOK-10 is an ordinary replacement."""
        doc = _document(_one(converter, _mdm("T10", "MDM_T02", number="DOK-10", parent="DOK-1^DIPS", obx=TEXT)))
        assert doc["relatesTo"][0]["target"]["identifier"]["value"] == "DOK-1"


class TestParagraphs:
    def test_a_blank_line_of_a_letter_is_kept(self, converter: Any) -> None:
        """An empty OBX-5 between text lines, or an empty repetition, is a blank line: paragraph breaks stay."""
        obx = ("OBX|1|TX|EPIKRISE^Epikrise^L||Kjære kollega,||||||F", "OBX|2|TX|EPIKRISE^Epikrise^L||||||||F",
               "OBX|3|TX|EPIKRISE^Epikrise^L||Avsnitt to.~~Avsnitt tre.||||||F", "OBX|4|TX|EPIKRISE^Epikrise^L||||||||F")
        doc = _document(_one(converter, _mdm("T02", "MDM_T02", obx=obx)))
        assert _texts(doc) == [("text/plain; charset=utf-8", "Kjære kollega,\n\nAvsnitt to.\n\nAvsnitt tre.")]
