"""`helsebro convert` and the ACK of deliveries with the quirks real senders have: BOMs, MLLP framing, escapes, odd control ids."""

from __future__ import annotations

from adapters.hl7v2._tokenizer import Delimiters, unescape
from router.contracts import Converted
from router.pipeline._reply import reply
from router.pipeline.convert import Converter
from router.testing import adt_message, isolated_settings


def _adt(control_id: str, visit: str = "V1") -> bytes:
    return adt_message("A01", control_id=control_id, fnr="15866112379", local_id="L1", visit=visit)



class TestSplitting:
    def test_a_second_file_with_its_own_bom_is_a_second_message(self, convert_file):
        """`cat a.hl7 b.hl7` of two files saved with a UTF-8 BOM: two Bundles, not one message refused at "segment 5"."""
        code, docs = convert_file(b"\xef\xbb\xbf" + _adt("C1") + b"\xef\xbb\xbf" + _adt("C2", "V2"))
        assert [d["resourceType"] for d in docs] == ["Bundle", "Bundle"] and code == 0

    def test_bytes_between_mllp_frames_are_not_part_of_a_message(self, convert_file):
        """A capture of an MLLP stream with noise between frames: MLLP ignores bytes outside a frame, so both messages convert."""
        data = b"\x0b" + _adt("C1") + b"\x1c\r" + b"keepalive\r\n" + b"\x0b" + _adt("C2", "V2") + b"\x1c\r" + b"trailer"
        code, docs = convert_file(data)
        assert [d["resourceType"] for d in docs] == ["Bundle", "Bundle"] and code == 0

    def test_a_frame_that_lost_its_start_byte_is_kept(self):
        """What follows a frame's end and names MSH is a message whose start byte was lost, never noise to drop."""
        from adapters.hl7v2.decode import split_messages

        data = b"\x0b" + _adt("C1") + b"\x1c\r" + _adt("C2", "V2") + b"\x1c\r"
        assert [b"|C2|" in raw.data for raw in split_messages(data)] == [False, True]


class TestEscapes:
    def test_highlighting_is_markup_not_text(self):
        """`\\H\\`…`\\N\\` (v2.5 §2.7.6) start and end highlighting: the text stays, the markup does not reach FHIR."""
        assert unescape("Svar: \\H\\positiv\\N\\ prøve", Delimiters()) == "Svar: positiv prøve"

    def test_hex_bytes_that_are_not_utf8_read_as_latin1(self):
        """`\\XE5F8\\` from an ISO-8859-1 sender is "åø": two bytes that are not UTF-8 are not two U+FFFD."""
        assert unescape("Gr\\XE5F8\\d", Delimiters()) == "Gråød"
        assert unescape("Gr\\XC3A5\\d", Delimiters()) == "Gråd"  # UTF-8 bytes still read as UTF-8


class _Publisher:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def reply(self, body: bytes, *, headers: dict) -> None:
        self.sent.append(body)


def _msa2(converted: Converted) -> str:
    publisher = _Publisher()
    reply(publisher, converted, converted.error, apprec_prefix="x")  # type: ignore[arg-type]
    [ack] = publisher.sent
    msa = next(seg for seg in ack.decode().split("\r") if seg.startswith("MSA|"))
    return msa.split("|")[2]


class TestControlId:
    def test_a_control_id_with_a_component_separator_is_kept_whole(self, tmp_path):
        """MSH-10 `B7^1` and `B7^2` are two messages: cut at `^`, both were `B7` (the second taken for a duplicate of the
        first and never applied) and MSA-2 answered neither. MSA-2 carries it whole, escaped as ST wants."""
        converter = Converter(isolated_settings(tmp_path))
        first = converter.convert(_adt("B7^1"))[0]
        second = converter.convert(_adt("B7^2", "V2"))[0]
        assert (first.control_id, second.control_id) == ("B7^1", "B7^2")
        assert _msa2(first) == "B7\\S\\1"


class TestWideCharsets:
    def test_a_utf16_hl7_file_is_refused_as_utf16_not_as_broken_xml(self, convert_file):
        """A message saved as "Unicode" (UTF-16 with a BOM, Notepad's) is HL7 v2 in a charset Helsebro does not read: the
        OperationOutcome says so at MSH, instead of "not well-formed XML" that sends its reader after a KITH problem."""
        code, docs = convert_file(_adt("C1").decode().encode("utf-16"))
        [issue] = docs[0]["issue"]
        assert code == 1 and "UTF-16" in issue["diagnostics"] and "XML" not in issue["diagnostics"]
        assert issue["expression"] == ["MSH"]

    def test_a_utf16_kith_document_is_still_xml(self):
        from router.pipeline.convert import _is_xml

        assert _is_xml('<?xml version="1.0" encoding="UTF-16"?><MsgHead/>'.encode("utf-16"))
        assert _is_xml('<MsgHead/>'.encode("utf-32"))


class TestAckCharset:
    def test_the_ack_is_written_in_the_charset_the_sender_declared(self, tmp_path):
        """An ISO-8859-1 sender (MSH-18 `8859/1`) named "SØR" in MSH-4: its ACK's MSH-6 comes back in ISO-8859-1, not as
        UTF-8 bytes it reads as "SÃ˜R"."""
        data = _adt("C1").decode().replace("|PAS|STOLAV|", "|PAS|SØR|").replace("|UNICODE UTF-8", "|8859/1").encode("latin-1")
        [converted] = Converter(isolated_settings(tmp_path)).convert(data)
        publisher = _Publisher()
        reply(publisher, converted, converted.error, apprec_prefix="x")  # type: ignore[arg-type]
        [ack] = publisher.sent
        assert ack.decode("latin-1").split("\r")[0].split("|")[5] == "SØR"

    def test_an_undeclared_sender_configured_as_latin1_is_answered_in_latin1(self, tmp_path):
        """A sender listed under hl7v2.senders with charset iso-8859-1 and no MSH-18 reads its ACK in that charset too."""
        data = _adt("C2").decode().replace("|PAS|STOLAV|", "|PAS|SØR|").replace("|UNICODE UTF-8", "|").encode("latin-1")
        settings = isolated_settings(tmp_path, hl7v2={"senders": {"PAS": {"charset": "iso-8859-1"}}})
        [converted] = Converter(settings).convert(data)
        publisher = _Publisher()
        reply(publisher, converted, converted.error, apprec_prefix="x")  # type: ignore[arg-type]
        [ack] = publisher.sent
        assert ack.decode("latin-1").split("\r")[0].split("|")[5] == "SØR"


class TestUnreadableFolders:
    def test_a_subfolder_that_cannot_be_read_fails_the_run(self, tmp_path, capsys, monkeypatch):
        """A subfolder the user may not list held messages nobody converted: said on stderr and exit 1, never a quiet exit 0."""
        import os

        from router.cli import main

        folder = tmp_path / "drop"
        (folder / "locked").mkdir(parents=True)
        (folder / "a.hl7").write_bytes(_adt("C1"))
        (folder / "locked" / "b.hl7").write_bytes(_adt("C2", "V2"))
        real_scandir = os.scandir

        def scandir(path: object = "."):  # root reads any folder: chmod 000 would not fail the test under it
            if str(path).endswith("locked"):
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
        capsys.readouterr()
        code = main(["convert", str(folder)])
        out, err = capsys.readouterr()
        assert code == 1
        assert len(out.splitlines()) == 1  # a.hl7 still converted
        assert "cannot read folder" in err and "locked" in err and "Traceback" not in err
