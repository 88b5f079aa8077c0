"""Tests for adapters/hl7v2/decode.py and the tokenizer beneath it."""

from __future__ import annotations

import pytest

from adapters.hl7v2._tokenizer import Delimiters, tokenize, unescape
from adapters.hl7v2.decode import decode, split_messages
from router.errors import DecodeError

MSG = "MSH|^~\\&|PAS|STOLAV|HB|HP|20240115083000||ADT^A01^ADT_A01|C1|P|2.5.1|||||NOR|{cs}\rPID|1||123^^^X^PI||NORDMANN^{name}\r"


def _one(data: bytes, **kw):
    [raw] = split_messages(data)
    return decode(raw, **kw)


class TestSplitMessages:
    def test_cr_lf_and_crlf_give_the_same_segments(self):
        """Line endings CR, LF and CRLF all separate segments."""
        base = MSG.format(cs="", name="OLA").encode()
        for variant in (base, base.replace(b"\r", b"\n"), base.replace(b"\r", b"\r\n")):
            assert [s.name for s in _one(variant).message.segments] == ["MSH", "PID"]

    @pytest.mark.parametrize("end", ["\r", "\n", "\r\n"])
    def test_a_bare_lf_inside_a_text_stays_in_it(self, end):
        """An NTE written on several lines (bare LFs, a blank line) is one segment whose text keeps its line breaks, whatever ends the segments."""
        text = "Prøven ble tatt\nkl. 08:00 etter faste.\n\nRing ved spørsmål"
        data = (MSG.format(cs="", name="OLA") + f"NTE|1||{text}\rZZZ|1\r").replace("\r", end).encode()
        msg = _one(data).message
        assert [s.name for s in msg.segments] == ["MSH", "PID", "NTE", "ZZZ"]
        assert msg.leaf(msg.repetitions(msg.first("NTE"), 3)[0], 1, 0) == text

    @pytest.mark.parametrize(
        ("after", "names"),
        [
            ("PV1|1|I", ["MSH", "PID", "PV1"]),  # a segment name and the field separator
            ("pv1|1|I", ["MSH", "PID", "PV1"]),  # lowercase names are still names (the tokenizer's quirk)
            ("ZPX", ["MSH", "PID", "ZPX"]),  # a segment with no fields
            ("  \n\t\nPV1|1", ["MSH", "PID", "PV1"]),  # blank lines between segments are dropped
            ("", ["MSH", "PID"]),  # trailing LFs
        ],
    )
    def test_a_bare_lf_before_a_segment_ends_the_segment(self, after, names):
        """A bare LF followed by something that can start a segment (or nothing) is a segment end, as before."""
        data = (MSG.format(cs="", name="OLA").rstrip("\r") + "\n" + after + "\n\n").encode()
        assert [s.name for s in _one(data).message.segments] == names

    def test_a_text_line_that_looks_like_a_segment_still_splits(self):
        """The rule reads no content: a continuation line starting "ABC|" is a segment (and refused as one), never merged silently."""
        data = (MSG.format(cs="", name="OLA") + "NTE|1||se\nXYZ|neste linje\r").encode()
        assert [s.name for s in _one(data).message.segments] == ["MSH", "PID", "NTE", "XYZ"]

    def test_a_second_message_with_its_own_field_separator_is_not_swallowed(self):
        """Two LF-ended messages in one file, the second written with another field separator: two messages, as before
        bare LFs could stay in a text (each message's segments start with its own separator, not the first message's)."""
        first = MSG.format(cs="", name="OLA")
        second = MSG.format(cs="", name="KARI").replace("C1", "C2").replace("|", "#")
        raws = split_messages((first + second).replace("\r", "\n").encode())
        assert len(raws) == 2
        assert [[s.name for s in decode(r).message.segments] for r in raws] == [["MSH", "PID"], ["MSH", "PID"]]
        assert decode(raws[1]).header.control_id == "C2"

    def test_a_short_word_on_its_own_line_stays_in_the_text(self):
        """A text signed off on its own line ("Mvh", then a name) is text: a name alone on a line is a segment only
        in capitals, as segment names are written (ZPX), not any three letters."""
        text = "Prøven er hemolysert.\nMvh\nKari"
        data = (MSG.format(cs="", name="OLA") + f"NTE|1||{text}\rZZZ|1\r").replace("\r", "\n").encode()
        msg = _one(data).message
        assert [s.name for s in msg.segments] == ["MSH", "PID", "NTE", "ZZZ"]
        assert msg.leaf(msg.repetitions(msg.first("NTE"), 3)[0], 1, 0) == text

    def test_mllp_frame_and_bom_are_ignored(self):
        """MLLP start/end bytes and a UTF-8 BOM around a message are stripped."""
        data = b"\x0b\xef\xbb\xbf" + MSG.format(cs="", name="OLA").encode() + b"\x1c\r"
        assert _one(data).header.control_id == "C1"

    def test_batch_yields_each_message_without_envelope_segments(self):
        """An FHS/BHS batch gives its messages, in order, and drops BTS/FTS."""
        one = MSG.format(cs="", name="A")
        two = one.replace("|C1|", "|C2|")
        data = f"FHS|^~\\&|X\rBHS|^~\\&|X\r{one}{two}BTS|2\rFTS|1\r".encode()
        parts = split_messages(data)
        assert [decode(p).header.control_id for p in parts] == ["C1", "C2"]
        assert all(b"BTS" not in p.data and b"FHS" not in p.data for p in parts)


class TestHeader:
    def test_sent_is_msh7_as_written(self):
        """MessageHeader.sent is MSH-7.1 exactly as the sender wrote it, offset and all."""
        data = MSG.format(cs="", name="OLA").replace("20240115083000", "20240115083000.12+0100^S").encode()
        assert _one(data).header.sent == "20240115083000.12+0100"

    def test_sent_is_none_without_msh7(self):
        """A message without MSH-7 has no `sent`, rather than an empty string or the clock."""
        assert _one(MSG.format(cs="", name="OLA").replace("20240115083000", "").encode()).header.sent is None


class TestCharsets:
    def test_declared_latin1_is_decoded(self):
        """MSH-18 8859/1 decodes ISO-8859-1 bytes correctly."""
        data = MSG.format(cs="8859/1", name="ÆRLIG").encode("latin-1")
        msg = _one(data).message
        assert msg.leaf(msg.repetitions(msg.first("PID"), 5)[0], 2, 0) == "ÆRLIG"

    def test_undeclared_charset_uses_the_senders_default(self):
        """With MSH-18 empty, the per-sender charset from config applies."""
        data = MSG.format(cs="", name="ØYVIND").encode("latin-1")
        d = _one(data, sender_charsets={"PAS": "iso-8859-1"})
        assert d.charset == "iso-8859-1"

    def test_declared_utf8_with_latin1_bytes_is_refused_at_msh18(self):
        """Bytes that contradict MSH-18 are a DecodeError naming MSH-18."""
        data = MSG.format(cs="UNICODE UTF-8", name="ÆRLIG").encode("latin-1")
        with pytest.raises(DecodeError) as err:
            _one(data)
        assert err.value.location == "MSH-18"

    def test_unknown_charset_is_refused(self):
        """An MSH-18 value Helsebro does not know is refused rather than guessed."""
        with pytest.raises(DecodeError):
            _one(MSG.format(cs="KLINGON", name="X").encode())

    def test_unknown_charset_refusal_lists_the_known_names_not_the_value(self):
        """An unknown MSH-18 holding a name and a fødselsnummer is refused naming MSH-18 and the names Helsebro reads, never the value."""
        with pytest.raises(DecodeError) as err:
            _one(MSG.format(cs="Snøfriskvik 15866112379", name="X").encode())
        assert err.value.location == "MSH-18" and "UNICODE UTF-8" in err.value.reason
        assert "15866112379" not in err.value.reason and "FRISKVIK" not in err.value.reason.upper()


class TestNul:
    @pytest.mark.parametrize(
        ("message", "location"),
        [
            (MSG.format(cs="", name="KARI").replace("|C1|", "|C\x001|"), "MSH-10"),
            (MSG.format(cs="", name="KA\x00RI"), "PID-5"),
            (MSG.format(cs="", name="KARI").replace("\rPID", "\rP\x00D"), "P?D"),
            (MSG.format(cs="", name="KARI").replace("|^~", "|^\x00~"), "MSH-2"),
        ],
    )
    def test_a_nul_character_is_refused_naming_where(self, message, location):
        """No HL7 v2 value holds a NUL, and the record's PostgreSQL text refuses one: the message is refused at decode."""
        with pytest.raises(DecodeError, match="NUL character") as err:
            _one(message.encode())
        assert err.value.location == location

    @pytest.mark.parametrize(("note", "location"), [("first line\nsec\x00ond", "NTE-3"), ("first line\nsecond|li\x00ne", "NTE-4"),
                                                    ("first line\rsecond li\x00ne", "segment 4")])
    def test_a_nul_after_a_line_break_in_a_text_names_its_segment_never_the_text(self, note, location):
        """A bare LF inside a field's text stays in the field (split_messages), so it does not start a segment: the
        location is the field the NUL lies in, never three characters of the text (a dead letter's header holds it).
        A line that is no segment is named by its number, as tokenize names it."""
        message = MSG.format(cs="", name="KARI") + f"NTE|1||{note}\r"
        with pytest.raises(DecodeError, match="NUL character") as err:
            _one(message.encode())
        assert err.value.location == location

    @pytest.mark.parametrize(("escaped", "read"), [("\\X00\\", "\ufffd"), ("\\X4100\\", "A\ufffd"), ("\\X41\\", "A")])
    def test_an_escaped_nul_reads_as_the_replacement_character(self, escaped, read):
        assert unescape(f"KA{escaped}RI", Delimiters()) == f"KA{read}RI"


class TestHeaderLengths:
    @pytest.mark.parametrize(
        ("old", "new", "location"),
        [("|C1|", "|" + "C" * 200 + "|", "MSH-10"), ("|PAS|", "|" + "P" * 228 + "|", "MSH-3"), ("|STOLAV|", "|" + "S" * 228 + "|", "MSH-4")],
    )
    def test_a_sender_or_control_id_longer_than_hl7_allows_is_refused(self, old, new, location):
        """They name the message in the record's keys, which the database indexes: refused at decode, naming the field."""
        with pytest.raises(DecodeError, match="HL7 v2 allows at most") as err:
            _one(MSG.format(cs="", name="KARI").replace(old, new).encode())
        assert err.value.location == location

    def test_the_longest_allowed_are_read(self):
        header = _one(MSG.format(cs="", name="KARI").replace("|C1|", "|" + "C" * 199 + "|").replace("|PAS|", "|" + "P" * 227 + "|").encode()).header
        assert (len(header.control_id), len(header.sending_application)) == (199, 227)


class TestTokenizer:
    def test_custom_delimiters_come_from_msh(self):
        """Non-standard MSH-1/MSH-2 characters are honoured."""
        msg = tokenize("MSH#$*/%#A#B\rPID#1##X$Y%Z*W")
        pid = msg.first("PID")
        reps = msg.repetitions(pid, 3)
        assert reps == ["X$Y%Z", "W"]
        assert msg.leaf(reps[0], 2, 2) == "Z"

    def test_v27_truncation_character_is_read(self):
        """A fifth encoding character is the v2.7 truncation character."""
        assert tokenize("MSH|^~\\&#|A\r").delims.truncation == "#"

    def test_lowercase_segment_ids_are_normalised(self):
        """A lower-case segment id is upper-cased rather than dropped."""
        assert [s.name for s in tokenize("MSH|^~\\&|A\rpid|1\r").segments] == ["MSH", "PID"]

    def test_explicit_null_reads_as_absent(self):
        """The explicit null "" reads as no value."""
        msg = tokenize('MSH|^~\\&|A\rPID|1||""\r')
        assert msg.leaf(msg.repetitions(msg.first("PID"), 3)[0], 1, 0) is None

    def test_bad_segment_name_is_an_error(self):
        """A line that is not a segment is refused with its position."""
        with pytest.raises(ValueError, match="segment 2"):
            tokenize("MSH|^~\\&|A\r!!!|x\r")


class TestUnescape:
    @pytest.mark.parametrize(
        ("raw", "want"),
        [("a\\F\\b", "a|b"), ("a\\S\\b", "a^b"), ("a\\T\\b", "a&b"), ("a\\R\\b", "a~b"), ("a\\E\\b", "a\\b"), ("l1\\.br\\l2", "l1\nl2"), ("\\X41\\", "A"), ("\\XC3B8\\", "ø"), ("keep \\Q\\", "keep \\Q\\")],
    )
    def test_escape_sequences(self, raw, want):
        """Each standard escape sequence becomes its character; unknown ones are kept."""
        assert unescape(raw, Delimiters()) == want


def test_a_stray_vertical_tab_in_an_unframed_message_is_no_open_frame():
    """Review: a 0x0B inside a field of a message sent without MLLP framing starts no frame; the message is
    not refused as one cut off (it was converted before, the byte dropped)."""
    data = MSG.format(cs="", name="OLA\x0bNORDMANN").encode()
    [part] = split_messages(data)
    assert decode(part).header.control_id == "C1"


def test_every_mllp_frame_without_an_end_byte_is_refused():
    """Review H182: not only the last frame is checked for its end byte (0x1C): a frame cut short before another
    starts is refused, the whole frames around it decode, in their order."""
    whole = [MSG.format(cs="", name=name).encode() for name in ("OLA", "KARI", "PER")]
    data = b"\x0b" + whole[0] + b"\x1c\r" + b"\x0b" + whole[1][:-3] + b"\x0b" + whole[2] + b"\x1c\r"
    parts = split_messages(data)
    assert [p.index for p in parts] == [0, 1, 2]
    assert [b"OLA" in parts[0].data, b"KA" in parts[1].data, b"PER" in parts[2].data] == [True] * 3
    assert decode(parts[0]).header.control_id == "C1"
    with pytest.raises(DecodeError, match="end byte"):
        decode(parts[1])
    assert decode(parts[2]).header.control_id == "C1"
