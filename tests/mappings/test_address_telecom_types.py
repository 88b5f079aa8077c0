"""HL7 v2 address types (XAD.7, table 0190) and telecom use and equipment (XTN.2/XTN.3, tables 0201/0202) in and out.

The v2-to-FHIR IG splits table 0190 in two: a mailing or shipping address is Address.type
postal (AddressType[Type]), and only home, work, temporary, bad and billing addresses have an
Address.use (AddressType[Use]). A cellular phone (XTN.3 CP) is a mobile (its
TelecommunicationEquipmentType row), which matters most before v2.5, when XTN.2 has no PRS. An
address or phone converted in and rendered out by the ADT mapping keeps its type. Synthetic
Norwegian people only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.hl7v2.outbound import load_outbound, load_tables
from adapters.hl7v2.render import Hl7v2Renderer
from router.cli import main
from router.pipeline.convert import Converter
from router.settings import PROJECT_ROOT

OUTBOUND = PROJECT_ROOT / "mappings" / "outbound" / "hl7v2" / "ADT_A01.yaml"


def _message(version: str, pid11: str = "", pid13: str = "", pid14: str = "") -> bytes:
    segments = [
        f"MSH|^~\\&|DIPS|STOLAV^974749025^ENH|HELSEBRO|HELSEPLATTFORMEN|20250110083000||ADT^A01|CTRL-1|P|{version}|||AL|NE|NOR|UNICODE UTF-8",
        "EVN|A01|20250110083000",
        f"PID|1||15866112379^^^NOR^FNR||NORDMANN^OLA^K||19610615|M|||{pid11}||{pid13}|{pid14}",
        "PV1|1|I|MED^301^2^STOLAV",
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def _patient(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes) -> dict[str, Any]:
    """The Patient `helsebro convert` makes of *data*."""
    f = tmp_path / "in.hl7"
    f.write_bytes(data)
    assert main(["convert", str(f)]) == 0
    bundle = json.loads(capsys.readouterr().out)
    [patient] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return dict(patient)


def _pid(converter: Converter, data: bytes, version: str) -> list[str]:
    """PID's fields as the outbound ADT mapping renders *data* converted in, for a *version* receiver."""
    [conv] = converter.convert(data)
    assert conv.error is None, conv.error
    mapping = load_outbound(OUTBOUND, version, tables=load_tables(OUTBOUND.parent))
    out = Hl7v2Renderer("legacy", [mapping], version=version, charset="UNICODE UTF-8", named=True).render(conv)
    [pid] = [s for s in out.decode("utf-8").split("\r") if s.startswith("PID|")]
    return pid.split("|")


class TestAddressType:
    @pytest.mark.parametrize(
        ("code", "kind"),
        [
            ("H", {"use": "home"}),
            ("B", {"use": "work"}),
            ("O", {"use": "work"}),
            ("C", {"use": "temp"}),
            ("M", {"type": "postal"}),
            ("SH", {"type": "postal"}),
            ("BA", {"use": "old"}),
            ("BI", {"use": "billing"}),
            ("BDL", {}),
            ("BR", {}),
            ("L", {}),
            ("P", {}),
            ("N", {}),
        ],
    )
    def test_xad_7_is_the_addresss_use_or_type_as_the_ig_maps_it(self, tmp_path: Path, capsys: pytest.CaptureFixture[str], code: str, kind: dict[str, str]) -> None:
        """XAD.7 gives Address.use (H, B, O, C, BA, BI) or Address.type (M, SH) per the IG's two 0190 maps; any other code neither."""
        [address] = _patient(tmp_path, capsys, _message("2.5.1", f"Storgata 1^^TRONDHEIM^^7011^NOR^{code}"))["address"]
        assert {k: v for k, v in address.items() if k in ("use", "type")} == kind

    @pytest.mark.parametrize("version", ["2.3", "2.5.1"])
    @pytest.mark.parametrize("code", ["H", "O", "C", "M", "BA", "BI"])
    def test_an_address_converted_in_and_rendered_out_keeps_its_type(self, converter: Converter, version: str, code: str) -> None:
        """PID-11.7 of a home, office, temporary, mailing, bad or billing address comes back out as it came in."""
        pid = _pid(converter, _message(version, f"Storgata 1^^TRONDHEIM^^7011^NOR^{code}"), version)
        assert pid[11].split("^")[6] == code


class TestCellularPhone:
    @pytest.mark.parametrize("version", ["2.3", "2.4", "2.5.1"])
    @pytest.mark.parametrize("use", ["", "PRN", "ORN"])
    def test_a_cellular_phone_is_a_mobile(self, tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str, use: str) -> None:
        """XTN.3 CP is a phone whose use is mobile, whatever residence number XTN.2 calls it (v2.3/2.4 have no PRS)."""
        [telecom] = _patient(tmp_path, capsys, _message(version, pid13=f"90000000^{use}^CP"))["telecom"]
        assert telecom == {"value": "90000000", "system": "phone", "use": "mobile"}

    def test_a_work_cellular_phone_stays_work(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """WPN^CP in PID-14 keeps its work use: the number is the work one, on whatever device."""
        [telecom] = _patient(tmp_path, capsys, _message("2.3", pid14="90000000^WPN^CP"))["telecom"]
        assert telecom == {"value": "90000000", "system": "phone", "use": "work"}

    def test_a_home_phone_stays_home(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """PRN^PH is still the home phone."""
        [telecom] = _patient(tmp_path, capsys, _message("2.3", pid13="22000000^PRN^PH"))["telecom"]
        assert telecom == {"value": "22000000", "system": "phone", "use": "home"}

    @pytest.mark.parametrize(("version", "xtn"), [("2.3", "ORN^CP"), ("2.4", "ORN^CP"), ("2.5.1", "PRS^CP")])
    def test_a_mobile_converted_in_and_rendered_out_is_still_a_mobile(self, converter: Converter, version: str, xtn: str) -> None:
        """A v2.3/2.4 PRN^CP comes back out as that version's mobile (ORN^CP; PRS^CP from v2.5), not a home phone."""
        pid = _pid(converter, _message(version, pid13="90000000^PRN^CP"), version)
        assert "^".join(pid[13].split("^")[1:3]) == xtn


class TestTelecomUse:
    @pytest.mark.parametrize(
        ("code", "use"),
        [("PRN", "home"), ("WPN", "work"), ("PRS", "mobile"), ("ORN", None), ("VHN", None), ("EMR", None), ("ASN", None), ("BPN", None)],
    )
    def test_xtn_2_is_the_use_the_ig_maps_and_no_other(self, tmp_path: Path, capsys: pytest.CaptureFixture[str], code: str, use: str | None) -> None:
        """XTN.2 gives ContactPoint.use only for PRN, WPN and PRS (IG TelecommunicationUseCode): an emergency or answering-service number is not temporary."""
        [telecom] = _patient(tmp_path, capsys, _message("2.5.1", pid13=f"22000000^{code}^PH"))["telecom"]
        assert telecom.get("use") == use

    def test_an_email_address_claims_no_use(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """NET^Internet is an e-mail address with no use: the IG maps NET to none, and home would be a guess."""
        [telecom] = _patient(tmp_path, capsys, _message("2.5.1", pid13="^NET^Internet^ola@example.no"))["telecom"]
        assert telecom == {"value": "ola@example.no", "system": "email"}
