"""Converter refusals name the MSH position, never a value a sender put there: through the engine on the embedded broker."""

from __future__ import annotations

import json

import structlog

from router.logging import configure_logging
from router.testing import adt_message, drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

FNR = "15866112379"  # synthetic (Tenor, month + 80)
FAMILY = "Snøfriskvik"
SECRETS = (FNR, FAMILY, "Snøfrisk", "SNØFRISK", "SN")  # "SN" cut from the name: the mangled `SN��FRISKVIK` an ASCII read made


def _with_msh(field: int, value: str, control_id: str) -> bytes:
    """A good ADT^A01 whose MSH-*field* holds *value* (a sender that shifted its fields puts patient data there)."""
    message = adt_message("A01", control_id=control_id, fnr=FNR, local_id="L1", visit=f"V-{control_id}", family=FAMILY)
    segments = message.decode("utf-8").split("\r")
    msh = segments[0].split("|")
    msh[field - 1] = value  # MSH-1 is the field separator itself: MSH-n sits at index n - 1
    segments[0] = "|".join(msh)
    return "\r".join(segments).encode("utf-8")


class TestRefusalsQuoteNoPatientData:
    def test_shifted_msh_fields_reach_no_log_header_or_ack_text(self, tmp_path, capsys):
        """A name and a fødselsnummer in MSH-9 (code, event, structure) or MSH-18 appear in no log line, no dead-letter
        header and no ACK MSA/ERR text, whether the message is applied (its mapping found by the other components) or
        refused; the refusals still name the position and quote the components that are codes."""
        configure_logging(level="debug")
        settings = isolated_settings(tmp_path)
        messages = [
            _with_msh(9, f"{FAMILY} {FNR}^A01^ADT_A01", "P-CODE"),  # ADT_A01 serves it: applied, its type logged and journalled
            _with_msh(9, f"ADT^{FAMILY}{FNR}^ADT_A01", "P-EVENT"),
            _with_msh(9, f"ZZZ^Z99^{FAMILY}", "P-STRUCT"),
            _with_msh(18, f"{FAMILY} {FNR}", "P-CHARSET"),
        ]
        handle = run_engine_in_thread(settings)
        try:
            publish(settings, messages)
            wait_until(lambda: handle.stats.messages == len(messages), 30, what="all settled")
        finally:
            handle.stop()
            structlog.reset_defaults()  # the logger above wrote to this test's captured stderr
        logs = capsys.readouterr().err
        letters = {h["x-helsebro-location"]: h for h, _ in drain_queue(settings, settings.engine.broker.names.dead_letter)}
        acks = [body.decode("utf-8") for _, body in drain_queue(settings, settings.engine.broker.names.replies)]
        answered = "\n".join(seg for ack in acks for seg in ack.split("\r") if seg.startswith(("MSA", "ERR")))

        assert sorted(letters) == ["MSH-18", "MSH-9", "MSH-9.2"]  # the test can fail: three were refused, where expected
        assert letters["MSH-18"]["x-helsebro-reason"].startswith("MSH-18 names a character set Helsebro does not know")
        assert "ZZZ^Z99" in letters["MSH-9"]["x-helsebro-reason"]  # the components that are codes are still quoted
        settled = {ln["control_id"]: ln for ln in map(json.loads, (x for x in logs.splitlines() if x.startswith("{")))
                   if ln.get("event") == "delivery_settled"}
        assert settled["P-CODE"]["outcome"] == "applied" and settled["P-CODE"]["message_type"].endswith("^A01")
        headers = json.dumps(letters, ensure_ascii=False)
        for secret in SECRETS[:4]:
            for where, text in (("log", logs), ("dead-letter header", headers), ("ACK MSA/ERR", answered)):
                assert secret not in text, f"{secret!r} in the {where}"
        assert "SN\ufffd" not in logs + headers + answered


class TestKithTypeQuotesNoPatientData:
    def test_text_in_msginfo_type_reaches_no_log_or_journal(self, tmp_path, capsys):
        """A name and a fødselsnummer in MsgInfo/Type (a sender that filled the wrong element) appear in no log line
        and no dead-letter header: the type is shown as `?` unless it is shaped as a Volven 8279 code, as MSH-9 is.
        The message is still mapped (by its payload's namespace), applied and answered."""
        from pathlib import Path

        dialog = Path(__file__).resolve().parents[3] / "mappings" / "kith" / "messages" / "Dialogmelding.cases" / "helsefaglig_dialog.xml"
        text = dialog.read_text(encoding="utf-8")
        assert 'V="DIALOG_HELSEFAGLIG"' in text
        shifted = text.replace('V="DIALOG_HELSEFAGLIG"', f'V="{FAMILY} {FNR}"', 1).encode("utf-8")
        configure_logging(level="debug")
        settings = isolated_settings(tmp_path)
        handle = run_engine_in_thread(settings)
        try:
            publish(settings, [shifted])
            wait_until(lambda: handle.stats.messages == 1, 30, what="settled")
        finally:
            handle.stop()
            structlog.reset_defaults()  # the logger above wrote to this test's captured stderr
        logs = capsys.readouterr().err
        settled = [ln for ln in map(json.loads, (x for x in logs.splitlines() if x.startswith("{"))) if ln.get("event") == "delivery_settled"]
        assert [ln["outcome"] for ln in settled] == ["applied"]  # the test can fail: it was mapped and applied
        assert settled[0]["message_type"] == "?"
        letters = json.dumps([h for h, _ in drain_queue(settings, settings.engine.broker.names.dead_letter)], ensure_ascii=False)
        for secret in SECRETS[:4]:
            assert secret not in logs, f"{secret!r} in the log"
            assert secret not in letters, f"{secret!r} in a dead-letter header"
