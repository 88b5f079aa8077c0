"""`helsebro apprec FILE` through its command line: output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from lxml import etree

from router.cli import main

PLO_16 = "plo/1_6/pasientlogistikk_1_6_mottak/Pasientlogistikk_Utskrivningsklar_pasient_v1-6_Ny.xml"
STATUS = "Dialogmelding/Dialogmelding-v1-1/Status_paa_henvisning-InnkaltEtterViderehenvisning.xml"
HEADER = re.compile(r"<!-- to HER-id (\S+), role (PRIM|COP), AppRec (1\.[01]), status ([12])(?: (\w+))? -->")


@pytest.fixture
def norsk(shared_dir: Path, monkeypatch) -> Path:
    """The national folder, with HELSEBRO_XSD_DIR pointing at its schemas."""
    monkeypatch.setenv("HELSEBRO_XSD_DIR", str(shared_dir / "norsk" / "skjema"))
    return shared_dir / "norsk"


def _documents(out: str) -> list[tuple[tuple[str, ...], etree._Element]]:
    """Split the output at the comment lines into (header fields, parsed AppRec)."""
    parts = HEADER.split(out)
    assert parts[0] == ""
    docs = []
    for i in range(1, len(parts), 6):
        header, body = tuple(parts[i:i + 5]), parts[i + 5]
        docs.append((header, etree.fromstring(body.lstrip("\n").encode("utf-8"))))
    return docs


class TestApprecVerb:
    def test_positive(self, norsk, capsys):
        """A valid message prints one positive AppRec per recipient and exits 0."""
        code = main(["apprec", str(norsk / "eksempel" / STATUS)])
        out = capsys.readouterr().out
        assert code == 0
        docs = _documents(out)
        assert [h[:4] for h, _ in docs] == [("90998", "PRIM", "1.1", "1"), ("90998", "COP", "1.1", "1")]
        assert all(etree.QName(d).localname == "AppRec" for _, d in docs)

    def test_the_answer_is_the_engines_for_a_message_no_mapping_serves(self, norsk, tmp_path, capsys, monkeypatch):
        """A well-formed, valid message of a kind no mapping converts gets T10, as the engine answers it (not OK)."""
        path = norsk / "eksempel" / PLO_16
        mappings = tmp_path / "mappings"
        shutil.copytree(Path(__file__).resolve().parents[2] / "mappings", mappings)
        (mappings / "kith" / "messages" / "PLO_Pasientlogistikk.yaml").unlink()
        shutil.rmtree(mappings / "kith" / "messages" / "PLO_Pasientlogistikk.cases")
        monkeypatch.setenv("HELSEBRO_MAPPINGS_DIR", str(mappings))
        code = main(["apprec", str(path)])
        captured = capsys.readouterr()
        assert code == 1
        assert [h[3:] for h, _ in _documents(captured.out)] == [("2", "T10")]

    def test_a_patient_not_identified_well_enough_gets_e36(self, norsk, tmp_path, capsys):
        """No name, only date of birth and sex: E36 (HIS 80415 §3.3), exit 1."""
        bad = tmp_path / "e36.xml"
        text = (norsk / "eksempel" / PLO_16).read_text("utf-8")
        stripped = re.sub(r"(<Patient>.*?)<FamilyName>[^<]*</FamilyName>\s*<GivenName>[^<]*</GivenName>", r"\1", text, count=1, flags=re.S)
        assert stripped != text
        bad.write_text(stripped, "utf-8")
        code = main(["apprec", str(bad)])
        captured = capsys.readouterr()
        assert code == 1
        assert {h[3:] for h, _ in _documents(captured.out)} == {("2", "E36")}
        assert "/MsgHead/MsgInfo/Patient" in captured.err

    @pytest.mark.parametrize(("example", "number", "where"), [
        (PLO_16, "15076500565", "/MsgHead/MsgInfo/Patient/Ident/Id"),
        ("Epikrise/Epikrise_v1-2/epikrise_v1.2_m.xml", "13116900216", "/Message/ServRprt/Patient/OffId"),
    ])
    def test_a_patients_national_id_with_a_wrong_check_digit_gets_e31(self, norsk, tmp_path, capsys, example, number, where):
        """The patient's FNR with its last digit changed: E31 (Pasientens fødselsnummer er feil), never the catch-all X99; exit 1."""
        bad = tmp_path / "e31.xml"
        text = (norsk / "eksempel" / example).read_text("utf-8")
        assert number in text
        bad.write_text(text.replace(number, number[:10] + str((int(number[10]) + 1) % 10)), "utf-8")
        code = main(["apprec", str(bad)])
        captured = capsys.readouterr()
        assert code == 1
        docs = _documents(captured.out)
        assert docs and {h[3:] for h, _ in docs} == {("2", "E31")}
        for _, doc in docs:
            [error] = [e for e in doc.iter() if etree.QName(e).localname == "Error"]
            assert error.get("S") == "2.16.578.1.12.4.1.1.8221" and error.get("DN") == "Pasientens fødselsnummer er feil"
            assert where in error.get("OT")

    def test_schema_invalid(self, norsk, tmp_path, capsys):
        """An XSD-invalid message prints a T02 AppRec, names the reason on stderr and exits 1."""
        bad = tmp_path / "bad.xml"
        bad.write_bytes((norsk / "eksempel" / PLO_16).read_bytes().replace(b"<MIGversion>v1.2 2006-05-24</MIGversion>", b"<MIGversion>x</MIGversion>"))
        code = main(["apprec", str(bad)])
        captured = capsys.readouterr()
        assert code == 1
        ((header, _doc),) = _documents(captured.out)
        assert header[3:] == ("2", "T02")
        assert "T02" in captured.err and "/MsgHead/MsgInfo/MIGversion" in captured.err
        assert "Traceback" not in captured.err

    def test_malformed(self, tmp_path, capsys, monkeypatch):
        """Bytes that are not XML give a T01 AppRec 1.1 to an unknown HER-id and exit 1."""
        monkeypatch.delenv("HELSEBRO_XSD_DIR", raising=False)
        bad = tmp_path / "bad.xml"
        bad.write_bytes(b"<MsgHead><unclosed>")
        code = main(["apprec", str(bad)])
        captured = capsys.readouterr()
        assert code == 1
        ((header, _),) = _documents(captured.out)
        assert header == ("unknown", "PRIM", "1.1", "2", "T01")
        assert "validation off" in captured.err

    def test_xxe(self, tmp_path, capsys, monkeypatch):
        """An XXE payload is T01 and the named file's content is never printed."""
        monkeypatch.delenv("HELSEBRO_XSD_DIR", raising=False)
        secret = tmp_path / "secret.txt"
        secret.write_text("TOP-SECRET-MARKER")
        bad = tmp_path / "xxe.xml"
        bad.write_text(f'<!DOCTYPE x [<!ENTITY e SYSTEM "{secret.as_uri()}">]><x>&e;</x>')
        assert main(["apprec", str(bad)]) == 1
        captured = capsys.readouterr()
        assert "T01" in captured.out and "TOP-SECRET-MARKER" not in captured.out + captured.err

    def test_apprec_gets_none(self, norsk, capsys):
        """An AppRec file is answered by nothing and exits 0."""
        assert main(["apprec", str(norsk / "eksempel" / "NPRbehandlerkravmelding" / "apprec-eksempel.xml")]) == 0
        assert "no AppRec" in capsys.readouterr().out

    def test_an_apprec_naming_no_original_is_dead_lettered_as_the_engine_does(self, norsk, tmp_path, capsys, monkeypatch):
        """Found by review H113: an AppRec without OriginalMsgId exited 0 ("no AppRec") while the engine dead-letters it.
        Still no AppRec (an AppRec is never answered), but exit 1 with the engine's reason on stderr."""
        body = (norsk / "eksempel" / "NPRbehandlerkravmelding" / "apprec-eksempel.xml").read_bytes()
        orphan = tmp_path / "orphan.xml"
        orphan.write_bytes(re.sub(rb"<OriginalMsgId>.*</OriginalMsgId>", b"", body, flags=re.S))
        monkeypatch.delenv("HELSEBRO_XSD_DIR")  # validation off: the XSD would refuse it (T02) before the engine's own check
        code = main(["apprec", str(orphan)])
        captured = capsys.readouterr()
        assert code == 1
        assert "no AppRec" in captured.out and "<AppRec" not in captured.out
        assert "OriginalMsgId" in captured.err and "dead-letter" in captured.err

    def test_an_apprec_in_a_msghead_gets_none(self, norsk, tmp_path, capsys):
        """Found by review H113: an AppRec carried in a MsgHead is an AppRec: answered by nothing, exit 0."""
        apprec = (norsk / "eksempel" / "NPRbehandlerkravmelding" / "apprec-eksempel.xml").read_bytes()
        root = etree.fromstring((norsk / "eksempel" / STATUS).read_bytes())
        mh = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"
        root.find(f"{mh}MsgInfo/{mh}Type").set("V", "APPREC")
        content = root.find(f"{mh}Document/{mh}RefDoc/{mh}Content")
        for child in list(content):
            content.remove(child)
        content.append(etree.fromstring(apprec))
        wrapped = tmp_path / "wrapped.xml"
        wrapped.write_bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
        code = main(["apprec", str(wrapped)])
        captured = capsys.readouterr()
        assert (code, captured.out.count("<AppRec")) == (0, 0), captured.err
        assert "no AppRec" in captured.out

    def test_missing_file(self, tmp_path, capsys):
        """A missing file is a usage error: exit 2, a one-line message, no traceback."""
        assert main(["apprec", str(tmp_path / "nope.xml")]) == 2
        err = capsys.readouterr().err
        assert "cannot read" in err and "Traceback" not in err

    def test_a_read_error_without_a_reason_says_what_it_was(self, tmp_path, capsys, monkeypatch):
        """Review H191: an OSError with no strerror (one raised with a message only, as a network share's) printed
        "cannot read X: None". It now gives the error's own words, still exit 2."""
        f = tmp_path / "m.xml"
        f.write_bytes(b"<a/>")
        real = Path.read_bytes

        def read_bytes(self):
            if self == f:
                raise OSError("the share went away")
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
        assert main(["apprec", str(f)]) == 2
        err = capsys.readouterr().err
        assert "None" not in err and f"cannot read {f}: the share went away" in err, err

    def test_a_fifo_is_refused_not_read(self, tmp_path, capsys):
        """Review H191: a FIFO given as FILE was read, and with no writer that read never ended. It is refused as
        `helsebro convert` and `send` refuse one: exit 2, saying what it is."""
        import os

        fifo = tmp_path / "pipe.xml"
        os.mkfifo(fifo)
        assert main(["apprec", str(fifo)]) == 2
        err = capsys.readouterr().err
        assert f"{fifo}: not a regular file" in err and "None" not in err, err

    @pytest.mark.parametrize("body", [
        b"MSH|^~\\&|PAS|SYKEHUS|HELSEBRO|HB|20240301120000||ADT^A01|C1|P|2.5\rPID|1||1001^^^SYKEHUS^PI||Testesen^Kari\r",
        b"hello",
    ], ids=["hl7v2", "neither"])
    def test_a_file_that_is_not_kith_xml_is_a_usage_error(self, tmp_path, capsys, monkeypatch, body):
        """The engine answers XML with AppRecs and anything else as HL7 v2, with an ACK. An HL7 v2 file printed a
        positive AppRec with an empty OriginalMsgId (and exit 0), the engine never sends; bytes that are neither a T01
        AppRec. Not a KITH XML message: a usage error, exit 2, no AppRec."""
        monkeypatch.delenv("HELSEBRO_XSD_DIR", raising=False)
        path = tmp_path / "message.hl7"
        path.write_bytes(body)
        assert main(["apprec", str(path)]) == 2
        captured = capsys.readouterr()
        assert "<AppRec" not in captured.out
        assert "not KITH XML" in captured.err and "Testesen" not in captured.err

    def test_bad_xsd_dir(self, tmp_path, capsys, monkeypatch):
        """A schema folder without a catalog is a usage error (exit 2)."""
        monkeypatch.setenv("HELSEBRO_XSD_DIR", str(tmp_path))
        msg = tmp_path / "m.xml"
        msg.write_bytes(b"<a/>")
        assert main(["apprec", str(msg)]) == 2
        assert "ehelseCatalog.xml" in capsys.readouterr().err


class TestPatientWithoutANumber:
    """HIS 80415 §3.3: a name with date of birth and sex identifies a patient well enough, and an
    emergency referral needs no more than it has. Neither may be refused for want of a national id."""

    HENVISNING_OH = "Henvisning/Henvisning_v1-1/henvisning strukturert_v1.1_n.xml"  # ReqServ/Priority V="0"
    FNR_LINES = ("<OffId>21016400952</OffId>", '<TypeOffId V="FNR" DN="Fødselsnummer"/>')
    BIRTH = '<DateOfBirth V="1964-01-21"/>'

    def _referral(self, norsk: Path, tmp_path: Path, name: str, *, drop: tuple[str, ...], changes: dict[str, str] | None = None) -> Path:
        text = (norsk / "eksempel" / self.HENVISNING_OH).read_text("utf-8")
        for old in drop:
            assert old in text, old
            text = text.replace(old, "")
        for old, new in (changes or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        path = tmp_path / name
        path.write_text(text, "utf-8")
        return path

    def _convert(self, path: Path, capsys) -> tuple[int, dict]:
        code = main(["convert", str(path)])
        (doc,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return code, doc

    @staticmethod
    def _patient_request(doc: dict) -> dict:
        (entry,) = [e for e in doc["entry"] if e["resource"]["resourceType"] == "Patient"]
        return entry["request"]

    def test_name_birth_date_and_sex_without_a_number_is_accepted_and_kept_apart(self, norsk, tmp_path, capsys):
        """An elective referral whose patient has no OffId, but a name, date of birth and sex: a positive AppRec, a Bundle."""
        elective = {'<Priority V="0" DN="Øyeblikkelig hjelp"/>': '<Priority V="N" DN="Elektiv/Ordinær (elektiv)"/>'}
        path = self._referral(norsk, tmp_path, "dob.xml", drop=self.FNR_LINES, changes=elective)
        assert main(["apprec", str(path)]) == 0
        assert {h[3:] for h, _ in _documents(capsys.readouterr().out)} == {("1", None)}
        code, doc = self._convert(path, capsys)
        assert code == 0 and doc["resourceType"] == "Bundle"
        first = self._patient_request(doc)
        assert first["method"] == "POST" and "urn:helsebro:identity|" in first["ifNoneExist"]
        # The same referral again is the same patient; another referral for a namesake born the same day is not.
        again = self._convert(self._referral(norsk, tmp_path, "dob2.xml", drop=self.FNR_LINES, changes=elective), capsys)[1]
        assert self._patient_request(again) == first
        other = dict(elective, **{"<Id>a1d21df0-b080-11e1-afa6-0800200c9a66</Id>": "<Id>b2e32ef1-b080-11e1-afa6-0800200c9a66</Id>"})
        namesake = self._convert(self._referral(norsk, tmp_path, "dob3.xml", drop=self.FNR_LINES, changes=other), capsys)[1]
        assert self._patient_request(namesake) != first

    def test_an_emergency_referral_with_a_name_only_is_accepted(self, norsk, tmp_path, capsys):
        """Priority 0 (øyeblikkelig hjelp, Volven 8304), no number and no date of birth: positive AppRec and a Bundle."""
        path = self._referral(norsk, tmp_path, "oh.xml", drop=(*self.FNR_LINES, self.BIRTH))
        assert main(["apprec", str(path)]) == 0
        assert {h[3:] for h, _ in _documents(capsys.readouterr().out)} == {("1", None)}
        code, doc = self._convert(path, capsys)
        assert code == 0 and doc["resourceType"] == "Bundle"

    def test_an_elective_referral_with_a_name_only_gets_e36(self, norsk, tmp_path, capsys):
        """The same referral marked elective is refused: the exception is for emergencies only."""
        elective = {'<Priority V="0" DN="Øyeblikkelig hjelp"/>': '<Priority V="3" DN="Haster (elektiv)"/>'}
        path = self._referral(norsk, tmp_path, "elective.xml", drop=(*self.FNR_LINES, self.BIRTH), changes=elective)
        assert main(["apprec", str(path)]) == 1
        assert {h[3:] for h, _ in _documents(capsys.readouterr().out)} == {("2", "E36")}

    def test_a_msghead_patient_with_name_birth_date_and_sex_only_is_accepted(self, norsk, tmp_path, capsys):
        """A PLO message whose MsgInfo/Patient has no Ident: a Bundle with the patient, not X99."""
        text = (norsk / "eksempel" / PLO_16).read_text("utf-8")
        stripped = re.sub(r"(<Patient>.*?)<Ident>.*?</Ident>", r"\1", text, count=1, flags=re.S)
        assert stripped != text
        path = tmp_path / "plo.xml"
        path.write_text(stripped, "utf-8")
        code, doc = self._convert(path, capsys)
        assert code == 0 and doc["resourceType"] == "Bundle"
        assert "urn:helsebro:identity|" in self._patient_request(doc)["ifNoneExist"]
