"""Which ACKs answer a message: HL7 original mode, or enhanced mode as MSH-15/16 ask, through the queue on both transports."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.hl7v2.ack import acks_for
from router.testing import adt_message, delete_queues, drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
GOOD_FNR = "15866112379"  # synthetic (Tenor, month + 80)
BAD_FNR = "15866112378"  # fails its check digits


def _asking(message: bytes, accept: str, application: str, *, sender: bytes = b"PAS") -> bytes:
    """*message* with MSH-15/16 set (and MSH-3 *sender*)."""
    return message.replace(b"|2.5.1|||||NO|", f"|2.5.1|||{accept}|{application}|NO|".encode(), 1).replace(b"MSH|^~\\&|PAS|", b"MSH|^~\\&|" + sender + b"|", 1)


def _good(control_id: str) -> bytes:
    return adt_message("A01", control_id=control_id, fnr=GOOD_FNR, local_id="L1", visit=f"V-{control_id}")


def _bad(control_id: str) -> bytes:
    return adt_message("A01", control_id=control_id, fnr=BAD_FNR, local_id="L2", visit=f"V-{control_id}")


def _unsupported(control_id: str) -> bytes:
    return _good(control_id).replace(b"ADT^A01^ADT_A01", b"MFN^M02^MFN_M02", 1)


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def enhanced(request, tmp_path):
    """Settings that answer as MSH-15/16 ask, except sender OLDPAS, answered in original mode whatever it asks."""
    s = isolated_settings(tmp_path, broker_url=RABBIT if request.param == "rabbitmq" else None,
                          hl7v2={"acknowledgments": "msh", "senders": {"OLDPAS": {"acknowledgments": "original"}}})
    yield s
    if s.broker_url:
        delete_queues(s)


def _answers(settings, messages: list[bytes]) -> dict[str, list[tuple[str, bytes]]]:
    handle = run_engine_in_thread(settings)
    publish(settings, messages)
    wait_until(lambda: handle.stats.messages == len(messages), 60, what="all settled")
    handle.stop()
    out: dict[str, list[tuple[str, bytes]]] = {}
    for headers, body in drain_queue(settings, settings.engine.broker.names.replies):
        out.setdefault(headers["x-helsebro-control-id"], []).append((headers["x-helsebro-ack-code"], body))
    return out


class TestEnhancedMode:
    def test_each_message_gets_the_acks_its_header_asks_for(self, enhanced):
        """AL/NE: only the accept ACK (CA), for a good message and for one refused for its content (kept as a dead letter);
        AL/AL: CA then AA; NE/ER: nothing for a good message, AE for a bad one; ER/SU: a message of an unsupported type is
        rejected at accept level (CR), with no application ACK; no MSH-15/16: original mode, one AA; OLDPAS asking AL/NE
        is answered in original mode (AE for its bad message) by its own setting."""
        answers = _answers(enhanced, [
            _asking(_good("G-ALNE"), "AL", "NE"), _asking(_bad("B-ALNE"), "AL", "NE"),
            _asking(_good("G-ALAL"), "AL", "AL"),
            _asking(_good("G-NEER"), "NE", "ER"), _asking(_bad("B-NEER"), "NE", "ER"),
            _asking(_unsupported("U-ERSU"), "ER", "SU"),
            _good("G-NONE"),
            _asking(_bad("B-OLD"), "AL", "NE", sender=b"OLDPAS"),
        ])
        codes = {cid: [code for code, _ in acks] for cid, acks in answers.items()}
        assert codes == {"G-ALNE": ["CA"], "B-ALNE": ["CA"], "G-ALAL": ["CA", "AA"], "B-NEER": ["AE"], "U-ERSU": ["CR"],
                         "G-NONE": ["AA"], "B-OLD": ["AE"]}
        [(_, ca)] = answers["G-ALNE"]
        assert b"\rMSA|CA|G-ALNE\r" in ca and b"\rERR|" not in ca  # an accept carries no error
        [(_, cr)] = answers["U-ERSU"]
        assert b"\rMSA|CR|U-ERSU|no mapping for message type MFN\\S\\M02" in cr and b"\rERR||MSH^1^9|200^Unsupported message type^HL70357|E\r" in cr
        [(_, ae)] = answers["B-NEER"]
        assert b"\rMSA|AE|B-NEER|" in ae and b"PID^1^3^1^1" in ae

    def test_by_default_every_message_is_answered_in_original_mode(self, tmp_path):
        """The shipped default (`original`): a sender asking AL/NE still hears AE about its bad message, and AA about its good one."""
        answers = _answers(isolated_settings(tmp_path), [_asking(_good("D1"), "AL", "NE"), _asking(_bad("D2"), "AL", "NE")])
        assert {cid: [code for code, _ in acks] for cid, acks in answers.items()} == {"D1": ["AA"], "D2": ["AE"]}


@pytest.mark.parametrize(("code", "accept", "application", "expected"), [
    ("AA", "", "", ("AA",)), ("AE", "", "", ("AE",)), ("AR", "", "", ("AR",)),
    ("AA", "AL", "AL", ("CA", "AA")), ("AE", "AL", "AL", ("CA", "AE")), ("AR", "AL", "AL", ("CR",)),
    ("AA", "NE", "NE", ()), ("AR", "NE", "NE", ()),
    ("AA", "ER", "ER", ()), ("AE", "ER", "ER", ("AE",)), ("AR", "ER", "ER", ("CR",)),
    ("AR", "NE", "AL", ("AR",)), ("AR", "SU", "ER", ("AR",)),  # no accept ACK asked for a rejection: the AR tells it
    ("AA", "SU", "SU", ("CA", "AA")), ("AE", "SU", "SU", ("CA",)), ("AR", "SU", "SU", ()),
    ("AA", "AL", "", ("CA", "AA")), ("AE", "", "XX", ("CA", "AE")),  # empty or unknown in enhanced mode reads as AL
])
def test_the_table_0155_conditions(code, accept, application, expected):
    assert acks_for(code, accept_type=accept, application_type=application) == expected


class TestWhatTheAckNames:
    """The ACK answers the message its sender sent: its MSH-10, its sender's names, the error code for what was refused."""

    def test_a_message_refused_before_its_header_was_read_is_answered_with_its_control_id(self, tmp_path):
        """An MSH-18 Helsebro does not know stops decoding before the header is read; the AR still names MSH-10 in MSA-2,
        goes back to the sender's MSH-3/4, in its version, for its trigger event."""
        message = _good("U-CS").replace(b"|NO|UNICODE UTF-8", b"|NO|KLINGON", 1)
        answers = _answers(isolated_settings(tmp_path), [message])
        [(code, body)] = answers["U-CS"]
        assert code == "AR"
        msh, msa, err = body.decode("utf-8").split("\r")[:3]
        assert msh.split("|")[2:6] == ["HELSEBRO", "HELSEPLATTFORMEN", "PAS", "STOLAV"]
        assert msh.split("|")[8] == "ACK^A01^ACK" and msh.split("|")[11] == "2.5.1"
        assert msa.startswith("MSA|AR|U-CS|") and err.startswith("ERR||MSH^1^18|")

    def test_the_ack_names_the_sender_by_its_whole_hd(self, tmp_path):
        """A sender named by its OID (MSH-3 `^2.16.578…^ISO`, MSH-4 `STOLAV^2.16.578…^ISO`) is answered to those names, not to their first components."""
        message = _good("HD1").replace(b"MSH|^~\\&|PAS|STOLAV|", b"MSH|^~\\&|^2.16.578.1.12.4.1.2.9^ISO|STOLAV^2.16.578.1.12.4.1.4.1^ISO|", 1)
        answers = _answers(isolated_settings(tmp_path), [message])
        [(code, body)] = answers["HD1"]
        assert code == "AA"
        assert body.split(b"\r")[0].split(b"|")[4:6] == [b"^2.16.578.1.12.4.1.2.9^ISO", b"STOLAV^2.16.578.1.12.4.1.4.1^ISO"]

    def test_an_event_the_mapping_does_not_cover_is_error_201(self, tmp_path):
        """The type is mapped, its trigger event is not: table 0357 201 "Unsupported event code", not 200 "Unsupported message type"."""
        message = _good("EV1").replace(b"ADT^A01^ADT_A01", b"ADT^Z99^ADT_A01", 1)
        answers = _answers(isolated_settings(tmp_path), [message])
        [(code, body)] = answers["EV1"]
        assert code == "AR"
        assert b"\rERR||MSH^1^9^1^2|201^Unsupported event code^HL70357|E\r" in body

    def test_a_version_or_processing_id_helsebro_does_not_take_is_rejected(self, tmp_path: Path) -> None:
        """HL7 v2.5 §2.9.2: a message whose MSH-12 or MSH-11 the receiver does not take is rejected (AR), never applied:
        MSH-12 `9.9` gets ERR-3 203 "Unsupported version id" at MSH^1^12 and an ACK in a version Helsebro writes; MSH-11 `X`
        (not in table 0103) gets 202 "Unsupported processing id" at MSH^1^11; a known version and id (2.3, T) are taken."""
        answers = _answers(isolated_settings(tmp_path), [
            _good("V99").replace(b"|P|2.5.1|", b"|P|9.9|", 1),
            _good("PX").replace(b"|P|2.5.1|", b"|X|2.5.1|", 1),
            _good("V23").replace(b"|P|2.5.1|", b"|T|2.3|", 1),
            _good("V29").replace(b"|P|2.5.1|", b"|P|2.9.1|", 1),  # a release after hl7apy's last: read, answered in 2.5
        ])
        [(code, body)] = answers["V99"]
        assert code == "AR"
        assert body.split(b"\r")[0].split(b"|")[11] == b"2.5"
        assert b"\rERR||MSH^1^12|203^Unsupported version id^HL70357|E\r" in body
        [(code, body)] = answers["PX"]
        assert code == "AR"
        assert b"\rERR||MSH^1^11|202^Unsupported processing id^HL70357|E\r" in body
        assert [code for code, _ in answers["V23"]] == ["AA"]
        assert [code for code, _ in answers["V29"]] == ["AA"]

    def test_the_ack_echoes_the_processing_id_and_the_charset(self, tmp_path: Path) -> None:
        """The ACK's MSH-11 is the message's (a training `T` message is answered as training, not production), and a message
        that declares its charset (MSH-18 `8859/1`) is answered in it with the same MSH-18, so the bytes are read as written."""
        message = _good("T1").replace(b"|P|2.5.1|", b"|T|2.5.1|", 1).replace(b"|UNICODE UTF-8", b"|8859/1", 1)
        message = message.replace(b"MSH|^~\\&|PAS|STOLAV|", "MSH|^~\\&|PAS|SØR|".encode("iso-8859-1"), 1)
        answers = _answers(isolated_settings(tmp_path), [message])
        [(code, body)] = answers["T1"]
        assert code == "AA"
        msh = body.split(b"\r")[0].split(b"|")
        assert msh[5] == "SØR".encode("iso-8859-1") and msh[10] == b"T"
        assert msh[17] == b"8859/1"


# Found by review H160: every content error was ERR-3 102 "Data type error".
_ORU = ("MSH|^~\\&|LAB|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|{cid}|P|2.5.1\rPID|1||15866112379^^^NOR^FNR\r"
        "OBR|1||LAB-1^LIS|{obr4}|||20250115080000\rOBX|1|NM|NPU02319^Hb||134|g/L|||||{obx11}\r")


def _strict_0085(tmp_path: Path) -> Path:
    """A copy of the shipped mappings whose table hl7-0085 (OBX-11) refuses a code it does not list (`unmapped: error`)."""
    import shutil

    mappings = tmp_path / "mappings"
    shutil.copytree(Path(__file__).resolve().parents[2] / "mappings", mappings)
    table = mappings / "hl7v2" / "tables" / "hl7-0085.yaml"
    table.write_text(table.read_text(encoding="utf-8").replace("unmapped: {value: unknown}", "unmapped: error"), encoding="utf-8")
    return mappings


@pytest.mark.parametrize("broker", ["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def test_a_content_error_carries_its_own_table_0357_code(tmp_path, broker):
    """HL7 table 0357: a required field with no value is 101 "Required field missing", a code the table does not list
    (a table that refuses unlisted codes) 103 "Table value not found", a value of the wrong form (a fødselsnummer failing
    its check digits) 102 "Data type error". Each was 102."""
    settings = isolated_settings(tmp_path, broker_url=RABBIT if broker == "rabbitmq" else None)
    settings = settings.model_copy(update={"mappings_dir": _strict_0085(tmp_path)})
    try:
        answers = _answers(settings, [
            _ORU.format(cid="R-101", obr4="", obx11="F").encode(),
            _ORU.format(cid="R-103", obr4="PANEL^Panel", obx11="Q").encode(),
            _bad("R-102"),
        ])
    finally:
        if settings.broker_url:
            delete_queues(settings)
    errs = {cid: [line for line in body.decode().split("\r") if line.startswith("ERR|")] for cid, [(_code, body)] in answers.items()}
    assert {cid: [code for code, _ in acks] for cid, acks in answers.items()} == {"R-101": ["AE"], "R-103": ["AE"], "R-102": ["AE"]}
    assert errs["R-101"] == ["ERR||OBR^1^4|101^Required field missing^HL70357|E"]
    assert errs["R-103"] == ["ERR||OBX^1^11^1^1|103^Table value not found^HL70357|E"]
    assert errs["R-102"] == ["ERR||PID^1^3^1^1|102^Data type error^HL70357|E"]
