"""`helsebro convert` through its command line: output contract, exit codes, identity, time."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from router.cli import main

ROOT = Path(__file__).resolve().parents[2]
FNR = "15866112379"  # synthetic (Tenor, month + 80)


def adt(pid3: str, *, event: str = "A01", ts: str = "20240115083000", admit: str = "20240715083000", cs: str = "UNICODE UTF-8") -> str:
    pv1 = ["PV1", "1", "I", "MED^301^2^STOLAV", "", "", "", "9144900^LEGE^LISA^^^^^^HPR^^^^HPR"] + [""] * 11 + ["V1^^^STOLAV^VN"] + [""] * 24 + [admit]
    return "\r".join(
        [
            f"MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HB|HP|{ts}||ADT^{event}^ADT_A01|C-{event}|P|2.5.1|||||NOR|{cs}",
            f"EVN|{event}|{ts}",
            f"PID|1||{pid3}||NORDMANN^OLA||19610615|M",
            "|".join(pv1),
        ]
    ) + "\r"


def run_convert(capsys, tmp_path: Path, text: str, *extra: str) -> tuple[int, list[dict], str]:
    f = tmp_path / "m.hl7"
    f.write_bytes(text.encode("utf-8"))
    code = main(["convert", *extra, str(f)])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def lint_refuses_a_key_that_is_not_a_list(capsys, tmp_path: Path, mapping: str, key: str, good: str, bad: str) -> None:
    """Edit a copy of the shipped mappings so *mapping*'s `key: good` reads `key: bad`; lint must refuse it at that line."""
    folder = tmp_path / "mappings" / "hl7v2"
    shutil.copytree(ROOT / "mappings" / "hl7v2", folder)
    path = folder / "messages" / f"{mapping}.yaml"
    text = path.read_text().replace(f"{key}: {good}", f"{key}: {bad}")
    path.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(f"{key}:"))
    code = main(["mappings", "lint", str(folder)])
    out = capsys.readouterr()
    assert code != 0
    assert f"{mapping}.yaml:{line}" in out.out + out.err and f"{key} must list segment names" in out.out + out.err


def resources(doc: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == kind]


class TestConvertContract:
    def test_bundle_is_a_valid_transaction_with_conditional_updates(self, capsys, tmp_path):
        """A good message gives one transaction Bundle, valid FHIR, every entry a conditional PUT."""
        code, docs, _ = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR"))
        assert code == 0 and len(docs) == 1
        Bundle.model_validate(docs[0])
        assert docs[0]["type"] == "transaction"
        assert all(e["request"]["method"] == "PUT" and "?identifier=" in e["request"]["url"] for e in docs[0]["entry"])

    def test_same_message_gives_the_same_ids(self, capsys, tmp_path):
        """Resource ids are deterministic: converting twice gives identical output."""
        _, first, _ = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR"))
        _, second, _ = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR"))
        assert first == second

    def test_messages_come_out_in_input_order_with_exit_1_on_any_failure(self, capsys, tmp_path):
        """Several messages give one line each in order; one failure makes the exit code 1."""
        text = adt(f"{FNR}^^^NOR^FNR") + adt("15866112378^^^NOR^FNR", event="A08")
        code, docs, _ = run_convert(capsys, tmp_path, text)
        assert code == 1
        assert [d["resourceType"] for d in docs] == ["Bundle", "OperationOutcome"]

    def test_usage_error_exits_2(self, capsys, tmp_path):
        """A missing PATH is a usage error, exit 2."""
        assert main(["convert", str(tmp_path / "nope.hl7")]) == 2

    def test_the_help_line_names_both_formats_it_converts(self, capsys):
        """`helsebro --help` said convert takes "HL7v2 message files", but it converts KITH XML too (review H168)."""
        with pytest.raises(SystemExit) as stop:
            main(["--help"])
        assert stop.value.code == 0
        [line] = [row for row in capsys.readouterr().out.splitlines() if row.split()[:1] == ["convert"]]
        assert "HL7" in line and "KITH XML" in line, line

    def test_a_folder_search_skips_hidden_files_and_folders(self, capsys, tmp_path):
        """Walking a folder skips `._m.hl7` (macOS AppleDouble, binary) and all under `.git/`; a hidden file named itself is read."""
        (tmp_path / "in" / ".git").mkdir(parents=True)
        (tmp_path / "in" / "m.hl7").write_text(adt(f"{FNR}^^^NOR^FNR"))
        (tmp_path / "in" / "._m.hl7").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
        (tmp_path / "in" / ".git" / "m.hl7").write_text("MSH|^~\\&|X\r")
        assert main(["convert", str(tmp_path / "in")]) == 0
        assert [json.loads(line)["resourceType"] for line in capsys.readouterr().out.splitlines()] == ["Bundle"]
        (tmp_path / "in" / ".hidden.hl7").write_text(adt(f"{FNR}^^^NOR^FNR"))
        assert main(["convert", str(tmp_path / "in" / ".hidden.hl7")]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 1

    @pytest.mark.parametrize("extra", [[], ["--explain"], ["--out", "out"]])
    def test_a_folder_with_no_message_files_is_said_and_exits_0(self, capsys, tmp_path, extra):
        """A folder with no message file gives nothing to do: said on stderr (naming it), nothing on stdout, exit 0 as `send` does."""
        (tmp_path / "drop").mkdir()
        (tmp_path / "drop" / "notes.md").write_text("not a message")
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "m.hl7").write_text(adt(f"{FNR}^^^NOR^FNR"))
        extra = [str(tmp_path / a) if a == "out" else a for a in extra]
        assert main(["convert", *extra, str(tmp_path / "drop")]) == 0
        out, err = capsys.readouterr()
        assert out == "" and f"{tmp_path / 'drop'}: no message files" in err
        assert main(["convert", *extra, str(tmp_path / "full"), str(tmp_path / "drop")]) == 0
        err = capsys.readouterr().err
        assert err.count("no message files") == 1 and f"{tmp_path / 'drop'}: no message files" in err

    def test_out_dir_mirrors_the_input_tree(self, tmp_path):
        """With --out, x/y.hl7 under a folder PATH is written to DIR/x/y.hl7.ndjson."""
        src = tmp_path / "in" / "x"
        src.mkdir(parents=True)
        (src / "y.hl7").write_text(adt(f"{FNR}^^^NOR^FNR"))
        assert main(["convert", "--out", str(tmp_path / "out"), str(tmp_path / "in")]) == 0
        written = (tmp_path / "out" / "x" / "y.hl7.ndjson").read_text().splitlines()
        assert json.loads(written[0])["resourceType"] == "Bundle"

    def test_two_inputs_that_would_share_an_output_file_are_a_usage_error(self, tmp_path, capsys):
        """--out with a/m.hl7 and b/m.hl7 (both m.hl7 under their folder PATH) is refused with exit 2, before anything is written."""
        for folder in ("a", "b"):
            (tmp_path / folder).mkdir()
            (tmp_path / folder / "m.hl7").write_text(adt(f"{FNR}^^^NOR^FNR"))
        assert main(["convert", "--out", str(tmp_path / "out"), str(tmp_path / "a"), str(tmp_path / "b")]) == 2
        assert "m.hl7.ndjson" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()

    def test_an_out_that_is_a_file_is_a_usage_error(self, tmp_path, capsys):
        """--out naming an existing file is refused with exit 2 and a reason, before anything is converted."""
        (tmp_path / "in.hl7").write_text(adt(f"{FNR}^^^NOR^FNR"))
        (tmp_path / "taken").write_text("not a folder")
        assert main(["convert", "--out", str(tmp_path / "taken"), str(tmp_path / "in.hl7")]) == 2
        assert "exists and is not a folder" in capsys.readouterr().err

    def test_an_out_that_cannot_be_written_gives_a_reason_not_a_traceback(self, tmp_path):
        """--out under a file (mkdir fails) ends with a reason on stderr and no traceback."""
        (tmp_path / "in.hl7").write_text(adt(f"{FNR}^^^NOR^FNR"))
        (tmp_path / "file").write_text("x")
        proc = subprocess.run([sys.executable, "-m", "router.cli", "convert", "--out", str(tmp_path / "file" / "sub"), str(tmp_path / "in.hl7")],
                              capture_output=True, cwd=ROOT, timeout=60)
        assert proc.returncode in (1, 2)
        assert b"Traceback" not in proc.stderr and b"cannot write under" in proc.stderr

    def test_a_reader_that_stops_early_gives_no_traceback(self, tmp_path):
        """`convert DIR | head`: the reader closes the pipe; convert stops quietly with exit 1 (not everything was written)."""
        for k in range(300):
            (tmp_path / f"m{k:03d}.hl7").write_text(adt(f"{FNR}^^^NOR^FNR"))
        proc = subprocess.Popen([sys.executable, "-m", "router.cli", "convert", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        assert proc.stdout is not None and proc.stderr is not None
        assert json.loads(proc.stdout.readline())["resourceType"] == "Bundle"
        proc.stdout.close()  # what `head -1` does
        err = proc.stderr.read()
        proc.stderr.close()
        assert proc.wait(timeout=60) == 1
        assert b"Traceback" not in err and b"Error" not in err

    def test_an_mllp_frame_cut_short_is_refused_not_converted(self, capsys, tmp_path):
        """A frame whose end byte (0x1C) never came is refused: its message may be cut mid-field; a whole frame before it converts."""
        whole = adt(f"{FNR}^^^NOR^FNR").encode()
        cut = whole[: whole.index(b"NORDMANN") + 4]  # the family name cut to NORD
        f = tmp_path / "framed.hl7"
        f.write_bytes(b"\x0b" + whole + b"\x1c\r" + b"\x0b" + cut)
        code = main(["convert", str(f)])
        docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert code == 1
        assert [d["resourceType"] for d in docs] == ["Bundle", "OperationOutcome"]
        assert "end byte" in docs[1]["issue"][0]["diagnostics"]

    def test_an_earlier_mllp_frame_cut_short_is_refused_too(self, capsys, tmp_path):
        """Review H182: a frame that never got its end byte is refused wherever it stands, not only last; a new
        start byte after a cut frame is how a resent message looks in a capture."""
        whole = adt(f"{FNR}^^^NOR^FNR").encode()
        cut = whole[: whole.index(b"NORDMANN") + 4]
        f = tmp_path / "framed.hl7"
        f.write_bytes(b"\x0b" + cut + b"\x0b" + whole + b"\x1c\r")
        code = main(["convert", str(f)])
        docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert code == 1
        assert [d["resourceType"] for d in docs] == ["OperationOutcome", "Bundle"]
        assert "end byte" in docs[0]["issue"][0]["diagnostics"]

    def test_a_read_error_without_a_reason_says_what_it_was(self, capsys, tmp_path, monkeypatch):
        """Review H182: an OSError with no strerror (an error raised with a message only) printed "cannot read X: None"."""
        f = tmp_path / "m.hl7"
        f.write_text(adt(f"{FNR}^^^NOR^FNR"))
        real = Path.read_bytes

        def read_bytes(self):
            if self == f:
                raise OSError("the share went away")
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
        code = main(["convert", str(f)])
        err = capsys.readouterr().err
        assert code == 1
        assert "None" not in err and "the share went away" in err

    def test_a_path_that_is_a_fifo_is_named_as_such(self, capsys, tmp_path):
        """Review H182: a FIFO given as PATH is no missing file: exit 2, saying what it is."""
        fifo = tmp_path / "pipe.hl7"
        os.mkfifo(fifo)
        code = main(["convert", str(fifo)])
        err = capsys.readouterr().err
        assert code == 2
        assert "not a regular file or folder" in err and "no such file" not in err

    def test_a_path_that_cannot_be_read_says_so(self, capsys, tmp_path, monkeypatch):
        """Review H182: a PATH whose folder denies access is not "no such file or folder" (exit 2, as before)."""
        f = tmp_path / "m.hl7"
        f.write_text(adt(f"{FNR}^^^NOR^FNR"))
        real = Path.stat

        def stat(self, *args, **kwargs):
            if self == f:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "stat", stat)
        code = main(["convert", str(f)])
        err = capsys.readouterr().err
        assert code == 2
        assert "cannot read" in err and "Permission denied" in err and "no such file" not in err

    def test_garbage_never_gives_a_traceback(self, tmp_path):
        """Binary junk gives an OperationOutcome and exit 1, never a traceback."""
        (tmp_path / "junk.hl7").write_bytes(b"\x00\xff\xfeMSH|\x00garbage\r\x1c")
        proc = subprocess.run([sys.executable, "-m", "router.cli", "convert", str(tmp_path / "junk.hl7")], capture_output=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 1
        assert b"Traceback" not in proc.stderr
        assert json.loads(proc.stdout.splitlines()[0])["resourceType"] == "OperationOutcome"


class TestIdentity:
    @pytest.mark.parametrize(
        ("pid3", "system"),
        [
            (f"{FNR}^^^NOR^FNR", "urn:oid:2.16.578.1.12.4.1.4.1"),
            ("55866110270^^^NOR^FNR", "urn:oid:2.16.578.1.12.4.1.4.2"),  # a D-nummer sent as FNR
            ("81234567802^^^NOR^NNNOR", "urn:oid:2.16.578.1.12.4.1.4.3"),
            ("30108299939^^^NOR^FNR", "urn:oid:2.16.578.1.12.4.1.4.1"),  # valid only under the 2032 rule
        ],
    )
    def test_national_id_is_classified_by_the_number(self, capsys, tmp_path, pid3, system):
        """FNR, D-nummer and FH-nummer go under their no-basis system whatever the type code says."""
        _, docs, _ = run_convert(capsys, tmp_path, adt(pid3))
        [patient] = resources(docs[0], "Patient")
        assert patient["identifier"][0]["system"] == system

    def test_h_nummer_stays_local(self, capsys, tmp_path):
        """An H-nummer (month + 40) is kept under the configured local system, not a national one."""
        _, docs, _ = run_convert(capsys, tmp_path, adt("01415010016^^^STOLAV^FNR"))
        [patient] = resources(docs[0], "Patient")
        assert patient["identifier"][0]["system"] == "urn:oid:2.16.578.1.12.4.1.7.3.2.1"

    def test_bad_check_digits_reject_the_message_naming_the_field(self, capsys, tmp_path):
        """A national id failing its check digits gives an OperationOutcome at PID-3[n].1."""
        _, docs, _ = run_convert(capsys, tmp_path, adt(f"4471^^^STOLAV^PI~{FNR[:-1]}8^^^NOR^FNR"))
        issue = docs[0]["issue"][0]
        assert issue["severity"] == "error"
        assert issue["expression"] == ["PID-3[2].1"]
        assert FNR[:-1] not in issue["diagnostics"]

    def test_a_patient_without_identifiers_is_refused_naming_the_field(self, capsys, tmp_path):
        """A PID with no PID-3 (nor PID-2) is refused with an OperationOutcome that names PID-3, as every refusal names its position."""
        code, docs, _ = run_convert(capsys, tmp_path, adt(""))
        assert code == 1
        [issue] = docs[0]["issue"]
        assert issue["expression"] == issue["location"] == ["PID-3"]

    def test_practitioner_and_organisation_identifiers(self, capsys, tmp_path):
        """HPR numbers and organisasjonsnummer go under their OIDs."""
        _, docs, _ = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR"))
        assert resources(docs[0], "Practitioner")[0]["identifier"][0]["system"] == "urn:oid:2.16.578.1.12.4.1.4.4"
        assert resources(docs[0], "Organization")[0]["identifier"][0] == {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "974749025"}

    @pytest.mark.parametrize(
        ("msh4", "identifier"),
        [
            ("STOLAV^2.16.578.1.12.4.1.2.112233^ISO", {"system": "urn:oid:2.16.578.1.12.4.1.2", "value": "112233"}),  # a HER-id as an OID
            ("STOLAV^2.16.578.1.12.4.1.4.101.974749025^ISO", {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "974749025"}),
            ("STOLAV^974 749 025^ENH", {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "974749025"}),  # its digits
            ("STOLAV^112 233^HER", {"system": "urn:oid:2.16.578.1.12.4.1.2", "value": "112233"}),
            ("STOLAV^112233^her", {"system": "urn:oid:2.16.578.1.12.4.1.2", "value": "112233"}),
            ("STOLAV^4001^RSH", {"system": "urn:oid:2.16.578.1.12.4.1.4.102", "value": "4001"}),  # a RESH-id, as in a CX
        ],
    )
    def test_an_organisation_is_under_its_national_oid_however_its_hd_writes_it(self, capsys, tmp_path, msh4, identifier):
        """MSH-4 naming the facility by HER-id or organisasjonsnummer, as a type code or as an ISO OID under the register's
        arc, with spaces or in lower case: one Organization under the national OID and the bare number, as a CX or an XON gives."""
        code, docs, _ = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR").replace("STOLAV^974749025^ENH", msh4))
        assert code == 0
        assert resources(docs[0], "Organization")[0]["identifier"][0] == identifier

    @pytest.mark.parametrize("msh4", ["STOLAV^56704A^HER", "STOLAV^2.16.578.1.12.4.1.2.56704A^ISO", "STOLAV^2.16.578.1.12.4.1.4.101.974749024^ISO"])
    def test_an_organisation_number_that_is_none_is_refused_at_its_place(self, capsys, tmp_path, msh4):
        """A HER-id with a letter, or an organisasjonsnummer whose check digit fails, is refused at MSH-4.2, as in a CX."""
        code, docs, _ = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR").replace("STOLAV^974749025^ENH", msh4))
        assert code == 1 and docs[0]["issue"][0]["expression"] == ["MSH-4[1].2"]

    def test_a_local_number_without_authority_is_its_senders(self, capsys, tmp_path):
        """Patient 123456 and doctor 4711, with no assigning authority, from two hospitals: two patients and two
        doctors, each under a system naming its sender (MSH-4), in one run (the practitioner is remembered per value)."""
        msgs = []
        for facility in ("SYKEHUS-A", "SYKEHUS-B"):
            text = adt("123456^^^^PI").replace("STOLAV^974749025^ENH", facility).replace("9144900^LEGE^LISA^^^^^^HPR^^^^HPR", "4711^LEGE^LISA")
            msgs.append(text)
        _, docs, _ = run_convert(capsys, tmp_path, "".join(msgs))
        systems = [(resources(d, "Patient")[0]["identifier"][0]["system"], resources(d, "Practitioner")[0]["identifier"][0]["system"]) for d in docs]
        assert systems == [
            ("urn:helsebro:local:SYKEHUS-A:PI", "urn:helsebro:local:SYKEHUS-A:id"),
            ("urn:helsebro:local:SYKEHUS-B:PI", "urn:helsebro:local:SYKEHUS-B:id"),
        ]
        assert docs[0]["entry"][1]["request"]["url"] != docs[1]["entry"][1]["request"]["url"]

    def test_a_local_number_from_a_sender_with_no_msh4_is_its_applications(self, capsys, tmp_path):
        """Patient 123456 with no assigning authority from two systems that leave MSH-4 empty: two patients, each
        under a system naming its sending application (MSH-3), never one `unknown` system every such sender shares."""
        msgs = [adt("123456^^^^PI").replace("|DIPS|STOLAV^974749025^ENH|", f"|{app}||").replace("9144900^LEGE^LISA^^^^^^HPR^^^^HPR", "4711^LEGE^LISA")
                for app in ("PASSYS-A", "PASSYS-B")]
        code, docs, _ = run_convert(capsys, tmp_path, "".join(msgs))
        assert code == 0
        systems = [(resources(d, "Patient")[0]["identifier"][0]["system"], resources(d, "Practitioner")[0]["identifier"][0]["system"]) for d in docs]
        assert systems == [
            ("urn:helsebro:local:PASSYS-A:PI", "urn:helsebro:local:PASSYS-A:id"),
            ("urn:helsebro:local:PASSYS-B:PI", "urn:helsebro:local:PASSYS-B:id"),
        ]

    def test_a_local_number_from_a_message_naming_no_sender_is_refused(self, capsys, tmp_path):
        """MSH-3 and MSH-4 both empty: a PID-3 number with no assigning authority belongs to nobody Helsebro can name,
        so the message is refused at PID-3 rather than filed under a system every such sender would share."""
        text = adt("123456^^^^PI").replace("|DIPS|STOLAV^974749025^ENH|", "|||")
        code, docs, _ = run_convert(capsys, tmp_path, text)
        assert code == 1
        issue = docs[0]["issue"][0]
        assert issue["expression"] == ["PID-3[1].1"] and "assigning authority" in issue["diagnostics"]
        assert "123456" not in json.dumps(docs[0])

    @pytest.mark.parametrize(
        ("pid3", "system"),
        [
            ("777^^^&2.16.578.1.12.4.1.7.9&ISO^PI", "urn:oid:2.16.578.1.12.4.1.7.9"),  # an authority known by its OID only
            (f"{FNR}^^^&2.16.578.1.12.4.1.4.1&ISO^NNNOR", "urn:oid:2.16.578.1.12.4.1.4.1"),  # the FNR OID: still a national number (a control)
            ("777^^^&AHUS&L^PI", "urn:oid:2.16.578.1.12.4.1.7.1.1"),  # a universal id that is a configured authority
        ],
    )
    def test_an_authority_named_by_its_universal_id(self, capsys, tmp_path, pid3, system):
        """CX-4.2/4.3 name the assigning authority when CX-4.1 is empty: an ISO OID is the system (as the v2-to-FHIR IG has it)."""
        _, docs, _ = run_convert(capsys, tmp_path, adt(pid3))
        [patient] = resources(docs[0], "Patient")
        assert patient["identifier"][0]["system"] == system

    def test_an_invalid_number_under_the_national_oid_is_refused(self, capsys, tmp_path):
        """A number whose authority is the FNR OID (CX-4.2) but whose check digits fail rejects the message."""
        code, docs, _ = run_convert(capsys, tmp_path, adt(f"{FNR[:-1]}8^^^&2.16.578.1.12.4.1.4.1&ISO"))
        assert code == 1 and docs[0]["issue"][0]["expression"] == ["PID-3[1].1"]

    def test_a_configured_sender_names_the_system_of_its_unqualified_numbers(self, capsys, tmp_path):
        """A sender listed under identifiers.authorities gives its configured system to numbers that name no authority."""
        _, docs, _ = run_convert(capsys, tmp_path, adt("123456^^^^PI"))
        [patient] = resources(docs[0], "Patient")
        assert patient["identifier"][0]["system"] == "urn:oid:2.16.578.1.12.4.1.7.3.2.1"  # STOLAV's, config/engine.yaml

    @pytest.mark.parametrize("facilities", [("SYKEHUS-A", "SYKEHUS-B"), ("^2.16.578.1.12.4.1.7.1^ISO", "^2.16.578.1.12.4.1.7.2^ISO")])
    def test_an_allergy_belongs_to_its_hospitals_patient(self, capsys, tmp_path, facilities):
        """The same allergy for MRN 123456 at two hospitals (different people) is two AllergyIntolerances,
        whether MSH-4 names each hospital by namespace or only by universal id."""
        msgs = [adt(f"123456^^^^PI~{fnr}^^^NOR^FNR").replace("STOLAV^974749025^ENH", facility) + "AL1|1|DA|^Penicillin\r"
                for facility, fnr in zip(facilities, (FNR, "02036110182"))]
        _, docs, _ = run_convert(capsys, tmp_path, "".join(msgs))
        urls = [e["request"]["url"] for d in docs for e in d["entry"] if e["resource"]["resourceType"] == "AllergyIntolerance"]
        assert len(urls) == 2 and urls[0] != urls[1]

    def test_results_of_v23_senders_keep_their_patient(self, capsys, tmp_path):
        """A v2.3 sender with the national id in PID-2 only: two patients' unnumbered results are two Observations."""
        def oru(ctrl: str, fnr: str) -> str:
            return "\r".join([f"MSH|^~\\&|LIS|LABA|HB|HP|20250115101500||ORU^R01^ORU_R01|{ctrl}|P|2.3", f"PID|1|{fnr}^^^NOR^FNR|||HANSEN^KARI||19610302|F",
                              "OBR|1|||NPU02319^Hb", "OBX|1|NM|NPU02319^Hb||134|g/L|||||F"]) + "\r"
        _, docs, _ = run_convert(capsys, tmp_path, oru("1", FNR) + oru("2", "02036110182"))
        urls = [e["request"]["url"] for d in docs for e in d["entry"] if e["resource"]["resourceType"] == "Observation"]
        assert len(urls) == 2 and urls[0] != urls[1]

    @staticmethod
    def _urls(docs: list[dict], kind: str) -> list[str]:
        return [e["request"]["url"] for d in docs for e in d["entry"] if e["resource"]["resourceType"] == kind]

    def test_an_allergy_is_keyed_by_its_patient_not_by_the_first_pid3(self, capsys, tmp_path):
        """An explicit null first in PID-3 (`""~FNR`) names no patient: two patients' penicillin allergies from one
        hospital stay two AllergyIntolerances, and two unnumbered Hb results stay two Observations."""
        allergies = [adt(f'""~{fnr}^^^NOR^FNR') + "AL1|1|DA|^Penicillin\r" for fnr in (FNR, "02036110182")]
        _, docs, _ = run_convert(capsys, tmp_path, "".join(allergies))
        urls = self._urls(docs, "AllergyIntolerance")
        assert len(urls) == 2 and urls[0] != urls[1]

        def oru(ctrl: str, fnr: str) -> str:
            return "\r".join([f"MSH|^~\\&|LIS|LABA|HB|HP|20250115101500||ORU^R01^ORU_R01|{ctrl}|P|2.5.1", f'PID|1||""~{fnr}^^^NOR^FNR||HANSEN^KARI||19610302|F',
                              "OBR|1|||NPU02319^Hb", "OBX|1|NM|NPU02319^Hb||134|g/L|||||F"]) + "\r"
        _, docs, _ = run_convert(capsys, tmp_path, oru("1", FNR) + oru("2", "02036110182"))
        urls = self._urls(docs, "Observation")
        assert len(urls) == 2 and urls[0] != urls[1]

    def test_an_allergy_stays_one_whatever_the_order_of_pid3(self, capsys, tmp_path):
        """The same patient's allergy, sent once with the FNR first in PID-3 and once with the hospital number first,
        is one AllergyIntolerance (and one Condition): it is keyed by the Patient's identity, the FNR."""
        first = adt(f"{FNR}^^^NOR^FNR~4471002^^^STOLAV^PI") + "AL1|1|DA|^Penicillin\rDG1|1||R07.4^Brystsmerter^ICD10|||A\r"
        second = adt(f"4471002^^^STOLAV^PI~{FNR}^^^NOR^FNR", event="A08") + "AL1|1|DA|^Penicillin\rDG1|1||R07.4^Brystsmerter^ICD10|||A\r"
        _, docs, _ = run_convert(capsys, tmp_path, first + second)
        for kind in ("AllergyIntolerance", "Condition", "Patient"):
            urls = self._urls(docs, kind)
            assert len(urls) == 2 and urls[0] == urls[1], kind

    @pytest.mark.parametrize(("dg1", "says"), [
        ("DG1|1||R07.4^Brystsmerter^ICD10|||A", "the one Helsebro derives needs its patient"),  # no id of its own
        ("DG1|1||R07.4^Brystsmerter^ICD10|||A" + "|" * 14 + "D-77^DIPS", "Condition.subject is required, but the patient"),  # DG1-20 names it
    ])
    def test_a_diagnosis_without_a_patient_is_refused(self, capsys, tmp_path, dg1, says):
        """A PID with no identifier makes no Patient: its diagnosis is refused with the reason, not stored for nobody."""
        text = "\r".join(["MSH|^~\\&|DIPS|STOLAV|HB|HP|20250115101500||ADT^A08^ADT_A01|C1|P|2.5.1", "EVN|A08|20250115101500",
                          "PID|1||||", dg1]) + "\r"
        code, docs, _ = run_convert(capsys, tmp_path, text)
        assert code == 1 and docs[0]["resourceType"] == "OperationOutcome"
        assert says in docs[0]["issue"][0]["diagnostics"]

    def test_a_final_result_updates_its_preliminary(self, capsys, tmp_path):
        """With an order number (OBR-3), a result is its order's test line: the final is the preliminary's next
        version even when the patient's identifiers come in another order or the time in another precision."""
        def oru(ctrl: str, pid: str, taken: str, status: str) -> str:
            return "\r".join([f"MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|{ctrl}|P|2.5.1", pid,
                              f"OBR|1||LAB-1^LIS|NPU02319^Hb|||{taken}", f"OBX|1|NM|NPU02319^Hb||134|g/L|||||{status}"]) + "\r"
        preliminary = oru("1", f"PID|1||{FNR}^^^NOR^FNR~4471^^^STOLAV^PI", "202501150800", "P")
        final = oru("2", f"PID|1|{FNR}^^^NOR^FNR|4471^^^STOLAV^PI~{FNR}^^^NOR^FNR", "20250115080000", "F")
        _, docs, _ = run_convert(capsys, tmp_path, preliminary + final)
        urls = [[e["request"]["url"] for e in d["entry"] if e["resource"]["resourceType"] in ("Observation", "DiagnosticReport")] for d in docs]
        assert urls[0] == urls[1] and len(urls[0]) == 2


class TestResultLines:
    """A result with an order number is its order's test (OBX-3, OBX-4), not its line number (OBX-1)."""

    @staticmethod
    def _oru(ctrl: str, *obx: str) -> str:
        lines = [f"OBX|{k}|{o}" for k, o in enumerate(obx, start=1)]
        return "\r".join([f"MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|{ctrl}|P|2.5.1", f"PID|1||{FNR}^^^NOR^FNR",
                           "OBR|1||LAB-1^LIS|PANEL^Panel|||20250115080000", *lines]) + "\r"

    @staticmethod
    def _by_code(doc: dict) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for e in doc["entry"]:
            if e["resource"]["resourceType"] == "Observation":
                out.setdefault(e["resource"]["code"]["coding"][0]["code"], []).append(e["request"]["url"])
        return out

    def test_a_renumbered_final_updates_its_preliminary(self, capsys, tmp_path):
        """The final adds a test before Hb, so Hb moves from OBX-1 to OBX-2: it still updates the preliminary Hb."""
        preliminary = self._oru("1", "NM|NPU02319^Hb||130|g/L|||||P")
        final = self._oru("2", "NM|NPU01960^Lkc||6.2|10*9/L|||||F", "NM|NPU02319^Hb||134|g/L|||||F")
        _, docs, _ = run_convert(capsys, tmp_path, preliminary + final)
        first, second = (self._by_code(d) for d in docs)
        assert first["NPU02319"] == second["NPU02319"]
        assert second["NPU01960"] != second["NPU02319"]

    def test_lines_of_one_test_are_told_apart_by_occurrence(self, capsys, tmp_path):
        """A report in three TX lines of one code is three Observations; sent again after another test was added
        before them, each line keeps its resource. Two alike lines are one."""
        lines = ["TX|REPORT^Report||line one", "TX|REPORT^Report||line two", "TX|REPORT^Report||line three"]
        first = self._oru("1", *lines)
        again = self._oru("2", "NM|NPU02319^Hb||134|g/L|||||F", *lines)
        alike = self._oru("3", "TX|REPORT^Report||same", "TX|REPORT^Report||same")
        code, docs, _ = run_convert(capsys, tmp_path, first + again + alike)
        assert code == 0
        one, two, three = (self._by_code(d)["REPORT"] for d in docs)
        assert len(set(one)) == 3 and one == two
        assert len(three) == 1


    @pytest.mark.parametrize("end", ["\r", "\n", "\r\n"])
    def test_a_text_sent_over_several_lines_keeps_its_line_breaks(self, capsys, tmp_path, end):
        """A TX value and its NTE written with bare LFs (not \\.br\\) convert, their line breaks kept, whatever ends the segments."""
        oru = self._oru("1", "TX|REPORT^Report||Funn:\nIngen brudd.|||||||F") + "NTE|1||Tatt\nfastende\r"
        code, [doc], _ = run_convert(capsys, tmp_path, oru.replace("\r", end))
        assert code == 0, doc
        [obs] = resources(doc, "Observation")
        assert obs["valueString"] == "Funn:\nIngen brudd." and obs["note"] == [{"text": "Tatt\nfastende"}]


class TestSeveralPatientsInOneMessage:
    def test_each_patient_result_group_keeps_its_own_patient(self, capsys, tmp_path):
        """An ORU^R01 with two PATIENT_RESULT groups: each report and result is about its own group's patient and stay."""
        text = "\r".join([
            "MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|C1|P|2.5.1",
            f"PID|1||{FNR}^^^NOR^FNR||NORDMANN^KARI||19610615|F", "|".join(["PV1", "1", "I", "MED"] + [""] * 15 + ["V-1^^^STOLAV^VN"]),
            "OBR|1||LAB-1^LIS|NPU02319^Hb", "OBX|1|NM|NPU02319^Hb||134|g/L|||||F",
            "PID|2||02036110182^^^NOR^FNR||HANSEN^PER||19610302|M", "|".join(["PV1", "1", "I", "KIR"] + [""] * 15 + ["V-2^^^STOLAV^VN"]),
            "OBR|1||LAB-2^LIS|NPU01459^Kreatinin", "OBX|1|NM|NPU01459^Kreatinin||250|umol/L|||H||F",
        ]) + "\r"
        code, docs, _ = run_convert(capsys, tmp_path, text)
        assert code == 0
        by_url = {e["fullUrl"]: e["resource"] for e in docs[0]["entry"]}
        about = {(r["resourceType"], r["code"]["coding"][0]["code"]): (by_url[r["subject"]["reference"]]["name"][0]["family"],
                 by_url[r["encounter"]["reference"]]["identifier"][0]["value"])
                 for r in by_url.values() if r["resourceType"] in ("Observation", "DiagnosticReport")}
        assert about == {
            ("DiagnosticReport", "NPU02319"): ("NORDMANN", "V-1"), ("Observation", "NPU02319"): ("NORDMANN", "V-1"),
            ("DiagnosticReport", "NPU01459"): ("HANSEN", "V-2"), ("Observation", "NPU01459"): ("HANSEN", "V-2"),
        }

    def test_every_merge_of_an_a40_is_applied(self, capsys, tmp_path):
        """An ADT^A40 with two PATIENT groups (PID + MRG each) is two merges: each survivor replaces its own old record."""
        text = "\r".join([
            "MSH|^~\\&|DIPS|STOLAV|HB|HP|20250115101500||ADT^A40^ADT_A39|C1|P|2.5.1", "EVN|A40|20250115101500",
            f"PID|1||{FNR}^^^NOR^FNR||NORDMANN^KARI", "MRG|111^^^STOLAV^PI",
            "PID|2||02036110182^^^NOR^FNR||HANSEN^PER", "MRG|222^^^STOLAV^PI",
        ]) + "\r"
        code, docs, _ = run_convert(capsys, tmp_path, text)
        assert code == 0
        patients = resources(docs[0], "Patient")
        by_id = {p["id"]: p for p in patients}
        retired = [p for p in patients if p.get("active") is False]
        assert len(patients) == 4 and len(retired) == 2
        for old in retired:
            survivor = by_id[old["link"][0]["other"]["reference"].removeprefix("urn:uuid:")]
            assert {i["value"] for i in survivor["identifier"] if i.get("use") == "old"} in ({"111"}, {"222"})
        assert {tuple(sorted(i["value"] for i in by_id[o["link"][0]["other"]["reference"].removeprefix("urn:uuid:")]["identifier"])) for o in retired} == {
            ("111", FNR), ("02036110182", "222")}


class TestStructuredNumbers:
    """OBX-2 SN as the v2-to-FHIR IG maps it: no value is dropped, and a quantity keeps its unit."""

    @pytest.mark.parametrize(("obx5", "unit", "value"), [
        ("<^5", "mg/L", {"valueQuantity": {"comparator": "<", "value": 5, "unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"}}),
        ("^5^-^10", "mmol/L", {"valueRange": {"low": {"value": 5, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
                                              "high": {"value": 10, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}}}),
        ("^1^:^64", "", {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 64}}}),
        ("^1^/^128", "", {"valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 128}}}),
        ("^2^+", "", {"valueString": "2 +"}),
        ("^pos", "", {"valueString": "pos"}),
    ])
    def test_each_form_keeps_its_value(self, capsys, tmp_path, obx5, unit, value):
        text = "\r".join(["MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|C1|P|2.5.1", f"PID|1||{FNR}^^^NOR^FNR",
                           "OBR|1||LAB-1^LIS|PANEL^Panel", f"OBX|1|SN|T^Test^L||{obx5}|{unit}|||||F"]) + "\r"
        code, docs, _ = run_convert(capsys, tmp_path, text)
        assert code == 0
        [obs] = resources(docs[0], "Observation")
        assert {k: v for k, v in obs.items() if k.startswith("value")} == value

    def test_a_number_with_a_comparator_sent_as_nm_keeps_its_unit(self, capsys, tmp_path):
        """`NM` "<5" is no plain number: it is the Quantity an SN `<^5` gives, its unit kept (review H178: it was text)."""
        text = "\r".join(["MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|C1|P|2.5.1", f"PID|1||{FNR}^^^NOR^FNR",
                           "OBR|1||LAB-1^LIS|PANEL^Panel", "OBX|1|NM|CRP^CRP^L||<5|mg/L|||||F"]) + "\r"
        _, docs, _ = run_convert(capsys, tmp_path, text)
        [obs] = resources(docs[0], "Observation")
        assert "valueString" not in obs
        assert {k: obs["valueQuantity"][k] for k in ("comparator", "value", "unit")} == {"comparator": "<", "value": 5, "unit": "mg/L"}


class TestOutOfPlace:
    def test_a_result_with_no_order_is_refused_naming_it(self, capsys, tmp_path):
        """An OBX after PV1 with no OBR before it has no report to belong to: refused at OBX, not dropped with a success."""
        text = "\r".join(["MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|C1|P|2.5.1", f"PID|1||{FNR}^^^NOR^FNR",
                           "PV1|1|I", "OBX|1|NM|NPU02319^Hb||134|g/L|||||F"]) + "\r"
        code, docs, _ = run_convert(capsys, tmp_path, text)
        assert code == 1
        issue = docs[0]["issue"][0]
        assert issue["expression"] == ["OBX"] and "no place for it" in issue["diagnostics"]


class TestRequiredSegments:
    @pytest.mark.parametrize("event", ["A01", "A04", "A08"])
    def test_an_adt_without_pid_is_refused_naming_it(self, capsys, tmp_path, event):
        """An ADT whose PID is missing is refused at PID, not converted to a Bundle of its sending facility alone."""
        text = "\r".join(line for line in adt(f"{FNR}^^^NOR^FNR", event=event).split("\r") if not line.startswith("PID")) + "\r"
        code, [doc], _ = run_convert(capsys, tmp_path, text)
        assert code == 1 and doc["resourceType"] == "OperationOutcome"
        issue = doc["issue"][0]
        assert (issue["diagnostics"], issue["expression"]) == ("ADT_A01 needs a PID segment, and this message has none", ["PID"])

    def test_a_result_without_pid_is_not_refused_for_it(self, capsys, tmp_path):
        """ORU_R01's PATIENT group is optional: a result with no PID is not refused as missing one (it fails, if at all, for its own reasons)."""
        text = "\r".join(["MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|C1|P|2.5.1",
                           "OBR|1|REK-1|LAB-1|NPU02319^Hb", "OBX|1|NM|NPU02319^Hb||134|g/L|||||F"]) + "\r"
        _, [doc], _ = run_convert(capsys, tmp_path, text)
        assert "needs a PID segment" not in json.dumps(doc)

    def test_lint_refuses_requires_that_is_not_a_list_of_segments(self, capsys, tmp_path):
        """`requires: PID` (a string) is refused at its line."""
        lint_refuses_a_key_that_is_not_a_list(capsys, tmp_path, "ADT_A01", "requires", "[PID]", "PID")


class TestRefusalsSayWhere:
    """Refusals name the position the sender must look at (issue 2: expression/location), not only the reason."""

    def test_a_segment_with_no_valid_name_is_placed_by_its_number(self, capsys, tmp_path):
        text = f"MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|C1|P|2.5.1\rPID|1||{FNR}^^^NOR^FNR\r12|x\r"
        code, [doc], _ = run_convert(capsys, tmp_path, text)
        assert code == 1 and doc["issue"][0]["location"] == ["segment 3"]

    def test_a_message_that_does_not_start_with_msh_is_placed_at_msh_not_msh_2(self, capsys, tmp_path):
        code, [doc], _ = run_convert(capsys, tmp_path, "MSH|^~\r")  # too short to carry its delimiters
        assert code == 1 and doc["issue"][0]["location"] == ["MSH"] and "MSH" in doc["issue"][0]["diagnostics"]

    def test_bad_encoding_characters_are_placed_at_msh_2(self, capsys, tmp_path):
        code, [doc], _ = run_convert(capsys, tmp_path, "MSH|^^\\&|LIS|STOLAV|HB|HP|20250115101500||ADT^A01|C1|P|2.5.1\r")
        assert code == 1 and doc["issue"][0]["location"] == ["MSH-2"]

    def test_a_diagnosis_whose_patient_the_empty_pid_does_not_give_is_placed_at_pid_3(self, capsys, tmp_path):
        """PID is there but empty: the Condition has no patient to refer to, and the sender is pointed at PID-3."""
        text = "\r".join(line if not line.startswith("PID") else "PID|1" for line in adt(f"{FNR}^^^NOR^FNR").split("\r"))
        text = text.rstrip("\r") + "\rDG1|1||R07.4^Brystsmerter^ICD10|||A\r"
        code, [doc], _ = run_convert(capsys, tmp_path, text)
        issue = doc["issue"][0]
        assert code == 1 and issue["diagnostics"] == "Condition.subject is required, but the patient it refers to is not in this message", issue
        assert issue["location"] == ["PID-3"]

    def test_two_orders_under_one_number_are_placed_at_the_second(self, capsys, tmp_path):
        """Two different orders with one placer number: refused at the second order's segment, not without a place."""
        text = "\r".join([
            "MSH|^~\\&|CPOE|STOLAV|HB|HP|20250115101500||OMP^O09^OMP_O09|C1|P|2.5.1", f"PID|1||{FNR}^^^NOR^FNR",
            "ORC|NW|PLAC-1^CPOE", "RXO|A02BC01^Omeprazol^ATC|20||mg", "ORC|NW|PLAC-1^CPOE", "RXO|N02BE01^Paracetamol^ATC|500||mg",
        ]) + "\r"
        code, [doc], _ = run_convert(capsys, tmp_path, text)
        issue = doc["issue"][0]
        assert code == 1 and "share the identity" in issue["diagnostics"], issue
        assert issue["location"] in (["ORC[2]"], ["RXO[2]"]), issue

    def test_a_doctor_number_naming_two_people_is_placed_in_every_message_not_only_the_first(self, capsys, tmp_path):
        """PV1-7 and PV1-17 give one number two names. The second message of the file builds its doctors from what the
        converter remembers of the first (engine._one's memo): its refusal must still say PV1-17, not nothing."""
        pv1 = ["PV1", "1", "I", "MED", "", "", "", "0148^ADDISON^JAMES"] + [""] * 9 + ["0148^ANDERSON^CARL", "", "V1^^^STOLAV^VN"]
        one = "\r".join([
            "MSH|^~\\&|DIPS|STOLAV|HB|HP|20250110083000||ADT^A01^ADT_A01|{ctrl}|P|2.5.1", "EVN|A01|20250110083000",
            f"PID|1||{FNR}^^^NOR^FNR||NORDMANN^OLA", "|".join(pv1),
        ]) + "\r"
        code, docs, _ = run_convert(capsys, tmp_path, one.format(ctrl="C1") + one.format(ctrl="C2"))
        assert code == 1 and len(docs) == 2
        for doc in docs:
            issue = doc["issue"][0]
            assert "share the identity" in issue["diagnostics"], issue
            assert issue["location"] == ["PV1-17[1]"], issue


class TestContextStay:
    @staticmethod
    def _oru(pv1: str) -> str:
        return "\r".join(["MSH|^~\\&|LIS|STOLAV|HB|HP|20250115101500||ORU^R01^ORU_R01|C1|P|2.5.1", f"PID|1||{FNR}^^^NOR^FNR",
                           pv1, "OBR|1||LAB-1|NPU02319^Hb", "OBX|1|NM|NPU02319^Hb||134|g/L|||||F"]) + "\r"

    def test_a_pv1_without_visit_number_or_admit_time_names_no_stay(self, capsys, tmp_path):
        """A result's PV1 with only a patient class makes no Encounter: its derived identity would be every stay of the patient."""
        _, docs, _ = run_convert(capsys, tmp_path, self._oru("PV1|1|I"))
        assert resources(docs[0], "Encounter") == []
        assert "encounter" not in resources(docs[0], "Observation")[0]

    def test_a_demographics_update_without_a_stay_makes_no_encounter(self, capsys, tmp_path):
        """ADT^A08 with `PV1|1|N` (no visit number, no admit time) updates the Patient and makes no never-ending Encounter."""
        text = "\r".join(["MSH|^~\\&|DIPS|STOLAV|HB|HP|20250115101500||ADT^A08^ADT_A01|C1|P|2.5.1", "EVN|A08|20250115101500",
                          f"PID|1||{FNR}^^^NOR^FNR||NORDMANN^OLA||19610615|M", "PV1|1|N"]) + "\r"
        code, docs, _ = run_convert(capsys, tmp_path, text)
        assert code == 0
        assert resources(docs[0], "Encounter") == []
        assert len(resources(docs[0], "Patient")) == 1

    def test_a_visit_number_names_the_stay(self, capsys, tmp_path):
        """With PV1-19 the result's stay is created when missing and referenced."""
        _, docs, _ = run_convert(capsys, tmp_path, self._oru("PV1|1|I" + "|" * 17 + "V9^^^STOLAV^VN"))
        [stay] = resources(docs[0], "Encounter")
        assert stay["identifier"][0]["value"] == "V9"
        assert resources(docs[0], "Observation")[0]["encounter"]["reference"].startswith("urn:uuid:")


class TestEncounter:
    def test_oslo_time_in_summer_and_winter(self, capsys, tmp_path):
        """Timestamps without an offset are Europe/Oslo: +02:00 in July, +01:00 in January."""
        _, docs, _ = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR", admit="20240715083000"))
        assert resources(docs[0], "Encounter")[0]["period"]["start"] == "2024-07-15T08:30:00+02:00"
        _, docs, _ = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR", admit="20240115083000"))
        assert resources(docs[0], "Encounter")[0]["period"]["start"] == "2024-01-15T08:30:00+01:00"

    @pytest.mark.parametrize(("event", "status"), [("A01", "in-progress"), ("A03", "finished"), ("A11", "cancelled"), ("A13", "in-progress")])
    def test_event_sets_status(self, capsys, tmp_path, event, status):
        """The trigger event decides Encounter.status."""
        text = adt(f"{FNR}^^^NOR^FNR", event=event).replace(f"ADT^{event}^ADT_A01", f"ADT^{event}")
        _, docs, _ = run_convert(capsys, tmp_path, text)
        assert resources(docs[0], "Encounter")[0]["status"] == status

    def test_patient_class_maps_to_actcode(self, capsys, tmp_path):
        """PV1-2 I becomes Encounter.class IMP."""
        _, docs, _ = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR"))
        assert resources(docs[0], "Encounter")[0]["class"]["code"] == "IMP"


class TestAuthorTools:
    def test_explain_names_rule_file_and_line(self, capsys, tmp_path):
        """--explain prints, per element, the source and the rule's file:line."""
        _, _, err = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR"), "--explain")
        assert "birthDate" in err and "PID-7" in err and "PID.Patient.yaml:" in err

    def test_explain_shows_a_resource_left_out_as_left_out(self, capsys, tmp_path):
        """PV1-7 names a doctor without a number: no Practitioner is written (the Encounter's participant carries the
        name). --explain must not list Practitioner elements the output does not hold; it says the resource was not
        written, at its template (review H88: it listed `Practitioner.name` as if it were there)."""
        code, docs, err = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR").replace("9144900^LEGE^LISA^^^^^^HPR^^^^HPR", "^LEGE^LISA"), "--explain")
        assert code == 0 and resources(docs[0], "Practitioner") == []
        assert "Practitioner.name" not in err
        assert "Practitioner (not written)" in err and "no identifier: a reference to it carries its name" in err
        assert "XCN.Practitioner.yaml:" in err
        code, docs, err = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR"), "--explain")  # with its number it is written
        assert resources(docs[0], "Practitioner") and "Practitioner.name.family" in err and "(not written)" not in err

    def test_unmapped_lists_unread_fields(self, capsys, tmp_path):
        """--unmapped names non-empty fields that no rule read, e.g. a Z-segment."""
        text = adt(f"{FNR}^^^NOR^FNR") + "ZPD|1|secret-local-flag\r"
        _, _, err = run_convert(capsys, tmp_path, text, "--unmapped")
        assert "ZPD-2" in err and "PID-7" not in err

    def test_a_mapping_reads_a_z_segment_between_standard_segments(self, capsys, tmp_path, monkeypatch):
        """A rule `from: ZPD-2` reads a site-defined segment placed between PID and PV1, escapes undone."""
        mappings = tmp_path / "mappings"
        shutil.copytree(ROOT / "mappings", mappings)
        template = mappings / "hl7v2" / "segments" / "PID.Patient.yaml"
        template.write_text(template.read_text().replace("rules:\n", "rules:\n  - target: maritalStatus.text\n    from: ZPD-2\n", 1))
        monkeypatch.setenv("HELSEBRO_MAPPINGS_DIR", str(mappings))
        text = adt(f"{FNR}^^^NOR^FNR").replace("\rPV1|", "\rZPD|1|Gift \\T\\ glad\rPV1|")
        code, docs, _ = run_convert(capsys, tmp_path, text)
        assert code == 0
        [patient] = resources(docs[0], "Patient")
        assert patient["maritalStatus"] == {"text": "Gift & glad"}

    def test_explain_names_a_ref_list_as_the_mapping_writes_it(self, capsys, tmp_path):
        """A rule `ref: [bed, room, ward]` is explained in the mapping language's words, as a single `ref:` is by its name."""
        _, _, err = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR"), "--explain")
        assert re.search(r"^  Encounter\.subject +<- patient +\S*PV1\.Encounter\.yaml:\d+$", err, re.M)
        assert re.search(r"^  Encounter\.location\.location +<- \[bed, room, ward\] +\S*PV1\.Encounter\.yaml:\d+$", err, re.M)
        assert re.search(r"^  Location\.partOf +<- \[room, ward\] +\S*PL\.Bed\.Location\.yaml:\d+$", err, re.M)
        assert "['" not in err

    def test_unmapped_lists_fields_read_only_for_a_dropped_element(self, capsys, tmp_path):
        """--unmapped names DG1-6 and DG1-15 of an A02, whose diagnosis entry is dropped (no Condition), not of an A01, which keeps them."""
        dg1 = "DG1|1||R07.4^Brystsmerter^ICD10|||A|||||||||1\r"
        _, _, transfer = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR", event="A02").replace("ADT_A01", "ADT_A02") + dg1, "--unmapped")
        _, _, admit = run_convert(capsys, tmp_path, adt(f"{FNR}^^^NOR^FNR") + dg1, "--unmapped")
        assert "DG1-6," in transfer and transfer.rstrip().endswith("DG1-15")
        assert "DG1-6" not in admit and "DG1-15" not in admit


class TestSegmentsAppliedOnce:
    A45 = ROOT / "mappings" / "hl7v2" / "messages" / "ADT_A45.cases" / "move_stay_to_the_right_patient.hl7"

    def test_an_a45_with_one_merge_info_moves_its_stay(self, capsys, tmp_path):
        """One MERGE_INFO: the stay is patched to the PID patient, owner the MRG patient."""
        code, [doc], _ = run_convert(capsys, tmp_path, self.A45.read_text())
        assert code == 0
        [patch] = [e for e in doc["entry"] if e["request"]["method"] == "PATCH"]
        assert patch["request"]["url"].startswith("Encounter?identifier=")

    def test_a_second_merge_info_is_refused_naming_mrg_2(self, capsys, tmp_path):
        """A second MRG (another stay to move) is refused at MRG[2], not acknowledged with its stay left unmoved."""
        second = "MRG|15866112379^^^NOR^FNR||||V25-0002^^^STOLAV^VN\rPV1|1|I|MED^302^1^STOLAV||||||||||||||||V25-0002^^^STOLAV^VN\r"
        code, [doc], _ = run_convert(capsys, tmp_path, self.A45.read_text() + second)
        assert code == 1 and doc["resourceType"] == "OperationOutcome"
        [issue] = doc["issue"]
        assert issue["expression"] == ["MRG[2]"] and "applies one MRG per message, and this message has 2" in issue["diagnostics"]

    def test_lint_refuses_once_that_is_not_a_list_of_segments(self, capsys, tmp_path):
        """`once: MRG` (a string) is refused at its line."""
        lint_refuses_a_key_that_is_not_a_list(capsys, tmp_path, "ADT_A45", "once", "[MRG]", "MRG")
