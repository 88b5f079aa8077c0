"""The floor: how fast plain Python can make the ADT^A01 Bundle Helsebro makes, written by hand.

Issue 2 sets convert at 15,000 msg/s for a typical ADT^A01 and measured a floor of about 47,000 msg/s
for tokenize + map + serialize of a 3-4 resource Bundle. Helsebro's mappings make a 13-entry Bundle
of that message (Patient, Encounter, practitioners, organisations, relatives, allergy, diagnosis,
observations). This file is that conversion written by hand for the one message shape of
bench/convert.py's ADT_A01, to measure what the same output costs with no engine at all: every value
is still read from the bytes (split-based tokenize, HL7 escapes undone, MSH checks, FNR check digits
and date, organisasjonsnummer check digit, HPR shape, timestamps with the Europe/Oslo offset, UUIDv5
ids via a namespaced SHA-1, conditional-PUT URLs with the engine's quoting, orjson for the bytes).
Left out: the unmapped report, --explain, group matching, general `when:` rules and tables (only this
message's branches), batches and charsets, the patient key.

    .venv/bin/python bench/floor.py [--n 20000]

It first checks that its bytes equal the engine's for every message of the stream (an edit of what
the message maps to makes them differ, and the figures then compare unlike outputs), then times
both, alternately, best of five. Session 26 (docs/performance.md): 1.02 M instructions per message
against the engine's 2.23 M.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson

_OSLO = ZoneInfo("Europe/Oslo")
_NS = hashlib.sha1(bytes.fromhex("d10ee3990d8d475b87fdf286ebc99291"), usedforsecurity=False)
_VAR = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")
_TS = re.compile(r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(\.[0-9]{1,4})?)?)?)?)?)?(?:([+-])([0-9]{2})([0-9]{2}))?", re.ASCII)
_DIM = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DIM29 = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR = "urn:oid:2.16.578.1.12.4.1.4.2"
FHN = "urn:oid:2.16.578.1.12.4.1.4.3"
HPR = "urn:oid:2.16.578.1.12.4.1.4.4"
ENH = "urn:oid:2.16.578.1.12.4.1.4.101"
LOCAL = "urn:oid:2.16.578.1.12.4.1.7.3.2.1"  # config: identifiers.authorities STOLAV (and the default)
IDENT = "urn:helsebro:identity"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
PTYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
LPT = "http://terminology.hl7.org/CodeSystem/location-physical-type"
# the mapping's provenance tag: structure@content hash of mappings/hl7v2/messages/ADT_A01.yaml (a literal of the mapping set)
TAG = {"tag": [{"system": "urn:helsebro:mapping", "code": "ADT_A01@9de3c3c21a9b", "display": "mappings/hl7v2/messages/ADT_A01.yaml"}]}
_PERSON_DISPLAY = {"FNR": "Fødselsnummer", "DNR": "D-nummer", "FHN": "Felles hjelpenummer", "HNR": "H-nummer"}
_0203 = {"PI": "Patient internal identifier", "VN": "Visit number", "AN": "Account number", "MR": "Medical record number"}
_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other", "N": "unknown"}
_ADDR_USE = {"H": "home", "O": "work", "B": "work", "C": "temp", "BA": "old"}
_TEL_SYS = {"PH": "phone", "Internet": "email", "X.400": "email", "FX": "fax", "CP": "phone", "BP": "pager"}
_TEL_USE = {"PRN": "home", "WPN": "work", "NET": None, "ORN": "home", "VHN": "home", "EMR": "home"}
_CLASS = {"I": ("IMP", "inpatient encounter"), "O": ("AMB", "ambulatory"), "E": ("EMER", "emergency")}
_STATUS = {"A01": "in-progress", "A04": "in-progress", "A08": None, "A13": "in-progress"}
_CODING = {"ICD10": "urn:oid:2.16.578.1.12.4.1.1.7110", "LN": "http://loinc.org", "ICPC2": "urn:oid:2.16.578.1.12.4.1.1.7170"}
_DIAG_ROLE = {"A": ("AD", "Admission diagnosis"), "W": ("billing", "Billing"), "F": ("DD", "Discharge diagnosis")}
_UCUM = {"cm": "cm", "kg": "kg", "g/L": "g/L"}
_ALLERGY_CAT = {"DA": "medication", "FA": "food", "EA": "environment", "PA": "environment", "LA": "environment", "AA": "biologic"}
_SYS_Q: dict[str, str] = {}


class Refused(ValueError):
    """The message is refused (the engine's MessageError)."""


def rid(*parts: str) -> str:
    h = _NS.copy()
    h.update("|".join(parts).encode())
    x = h.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VAR[x[16]]}{x[17:20]}-{x[20:32]}"


def query(system: str, value: str) -> str:
    q = _SYS_Q.get(system)
    if q is None:
        q = _SYS_Q[system] = quote(system, safe=":/.")
    return f"identifier={q}|{value if (value.isascii() and value.isalnum()) or _UNRESERVED.fullmatch(value) else quote(value, safe='')}"


def entry(rtype: str, res: dict[str, Any], system: str, value: str) -> tuple[dict[str, Any], str]:
    i = rid(rtype, system, value)
    res["id"] = i
    res["meta"] = TAG
    url = "urn:uuid:" + i
    return {"fullUrl": url, "resource": res, "request": {"method": "PUT", "url": f"{rtype}?{query(system, value)}"}}, url


_ESC = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    parts = s.split("\\")
    out = [parts[0]]
    for k in range(1, len(parts) - 1, 2):
        out.append(_ESC.get(parts[k], ""))
        out.append(parts[k + 1])
    return "".join(out)


def person(value: str) -> str | None:
    """FNR/DNR/FHN/HNR kind of an 11-digit number, checked (check digits and date), else None."""
    if len(value) != 11 or not value.isascii() or not value.isdigit():
        return None
    d = [ord(ch) - 48 for ch in value]
    s1 = 3 * d[0] + 7 * d[1] + 6 * d[2] + d[3] + 8 * d[4] + 9 * d[5] + 4 * d[6] + 5 * d[7] + 2 * d[8]
    s2 = 5 * d[0] + 4 * d[1] + 3 * d[2] + 2 * d[3] + 7 * d[4] + 6 * d[5] + 5 * d[6] + 4 * d[7] + 3 * d[8] + 2 * d[9]
    if (s1 + d[9]) % 11 > 3 or (s2 + d[10]) % 11 != 0:
        return None
    if d[0] >= 8:
        return "FHN"
    if d[0] <= 3 and d[2] in (4, 5):
        return "HNR"
    kind = "DNR" if d[0] >= 4 else "FNR"
    day = d[0] * 10 + d[1] - (40 if kind == "DNR" else 0)
    month = (d[2] * 10 + d[3]) % 40
    y2 = d[4] * 10 + d[5]
    if not 1 <= month <= 12 or day < 1 or day > _DIM29[month] or (month == 2 and day == 29 and y2 % 4):
        return None
    return kind


def orgnr_ok(v: str) -> bool:
    if len(v) != 9 or not v.isascii() or not v.isdigit():
        return False
    check = 11 - (3 * int(v[0]) + 2 * int(v[1]) + 7 * int(v[2]) + 6 * int(v[3]) + 5 * int(v[4]) + 4 * int(v[5]) + 3 * int(v[6]) + 2 * int(v[7])) % 11
    return check != 10 and check % 11 == int(v[8])


def hpr_ok(v: str) -> bool:
    return 1 <= len(v) <= 9 and v.isascii() and v.isdigit()


def _leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _date_ok(y: int, m: int, d: int) -> bool:
    return y != 0 and 1 <= m <= 12 and 1 <= d <= (_DIM29 if m == 2 and _leap(y) else _DIM)[m]


def fhir_date(v: str) -> str | None:
    if not v:
        return None
    if len(v) == 8 and v.isascii() and v.isdigit():
        if not _date_ok(int(v[:4]), int(v[4:6]), int(v[6:])):
            raise Refused("not an HL7 timestamp")
        return f"{v[:4]}-{v[4:6]}-{v[6:]}"
    raise Refused("date shape not in this floor")


def fhir_datetime(v: str) -> str | None:
    if not v:
        return None
    m = _TS.fullmatch(v)
    if m is None:
        raise Refused("not an HL7 timestamp")
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    if hour is None:
        raise Refused("date-only datetime not in this floor")
    minute = minute or "00"
    second = second or "00"
    if hour > "23" or minute > "59" or second > "59":
        raise Refused("not an HL7 timestamp")
    y, mo, d = int(year), int(month), int(day)
    if not _date_ok(y, mo, d):
        raise Refused("not an HL7 timestamp")
    if sign is None:
        off = datetime(y, mo, d, int(hour), int(minute), tzinfo=_OSLO).utcoffset()
        s = int(off.total_seconds()) // 60 if off is not None else 0
        offset = f"{'+' if s >= 0 else '-'}{abs(s) // 60:02d}:{abs(s) % 60:02d}"
    else:
        offset = f"{sign}{oh}:{om}"
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}{frac or ''}{offset}"


def number(v: str) -> int | float:
    s = v.strip()
    return int(s) if s.isdigit() else float(s)


def xpn(f: str, C: Callable[[str], list[str]]) -> dict[str, Any]:
    c = C(f)
    out: dict[str, Any] = {}
    if c[0]:
        out["family"] = c[0]
    given = [g for g in c[1:3] if g]
    if given:
        out["given"] = given
    return out


def xtn(f: str, C: Callable[[str], list[str]]) -> dict[str, Any]:
    c = C(f) + [""] * 12
    t: dict[str, Any] = {}
    if c[2] == "Internet":
        t["value"] = c[3]
    elif c[0]:
        t["value"] = c[0]
    elif not c[3] and c[11]:
        t["value"] = c[11]
    sysv = _TEL_SYS.get(c[2]) if c[2] else "phone"
    if sysv:
        t["system"] = sysv
    use = _TEL_USE.get(c[1])
    if use:
        t["use"] = use
    if c[2] == "CP" and c[1] != "WPN":
        t["use"] = "mobile"
    return t


def xad(f: str, C: Callable[[str], list[str]], with_use: bool = True) -> dict[str, Any]:
    c = C(f) + [""] * 9
    a: dict[str, Any] = {}
    line = [x for x in (_unescape(f.split("^", 1)[0].split("&")[0]), c[1]) if x]
    if line:
        a["line"] = line
    if c[2]:
        a["city"] = c[2]
    if c[3]:
        a["state"] = c[3]
    if c[4]:
        a["postalCode"] = c[4]
    if c[5]:
        a["country"] = c[5]
    if c[6] and c[6] in _ADDR_USE:
        a["use"] = _ADDR_USE[c[6]]
    return a


def cwe(f: str, C: Callable[[str], list[str]]) -> dict[str, Any]:
    c = C(f) + [""] * 9
    cc: dict[str, Any] = {}
    if c[0].strip():
        coding = {"code": c[0]}
        if c[1]:
            coding["display"] = c[1]
        if c[2]:
            coding["system"] = _CODING[c[2].upper()]
        cc["coding"] = [coding]
    if c[8]:
        cc["text"] = c[8]
    elif not c[0].strip() and not c[3].strip() and c[1]:
        cc["text"] = c[1]
    return cc


def xcn_practitioner(f: str, C: Callable[[str], list[str]], entries: list[Any]) -> str | None:
    c = C(f) + [""] * 13
    number_ = c[0]
    if not number_:
        return None
    if c[12].upper() in ("HPR", "NOHPR", "HPRNR") or c[8].split("&")[0].upper() in ("HPR", "NOHPR", "HPRNR"):
        if not hpr_ok(number_):
            raise Refused("HPR number is not 1-9 digits")
    else:
        raise Refused("only HPR practitioners in this floor")
    res = {"resourceType": "Practitioner", "identifier": [{"system": HPR, "value": number_}], "name": [xpn(f"{c[1]}^{c[2]}^{c[3]}", lambda s: s.split("^"))]}
    e, url = entry("Practitioner", res, HPR, number_)
    entries.append(e)
    return url


def convert(data: bytes) -> bytes:
    """The Bundle's JSON bytes for one ADT^A01 shaped as bench/convert.py's."""
    return orjson.dumps(build(data))


def tokenize(data: bytes) -> dict[str, list[list[str]]]:
    """The tokenize stage alone, as build() does it (for the stage measurement)."""
    text = data.decode("utf-8")
    segs: dict[str, list[list[str]]] = {}
    for line in text.split("\r"):
        if line:
            segs.setdefault(line[:3], []).append(line.split("|"))
    return segs


def build(data: bytes) -> dict[str, Any]:
    """The Bundle as a dict[str, Any] (everything but the serialisation)."""
    if not data.startswith(b"MSH"):
        raise Refused("no MSH segment")
    text = data.decode("utf-8")
    fs, cs = text[3], text[4]
    if fs != "|" or cs != "^":
        raise Refused("delimiters other than |^~\\& not in this floor")
    esc = "\\" in text[8:]
    if esc:
        def C(f: str) -> list[str]:
            return [_unescape(x) for x in f.split("^")]
    else:
        def C(f: str) -> list[str]:
            return f.split("^")
    segs: dict[str, list[list[str]]] = {}
    for line in text.split("\r"):
        if line:
            segs.setdefault(line[:3], []).append(line.split("|"))
    msh = segs["MSH"][0]
    msh = ["MSH", "|"] + msh[1:]  # MSH-n at index n
    msh += [""] * (19 - len(msh))
    msg_type = msh[9].split("^")
    if msg_type[0] != "ADT" or msg_type[1] not in ("A01", "A04", "A08", "A13"):
        raise Refused("no mapping")
    if msh[11] not in ("P", "T", "D") or not msh[12].startswith("2."):
        raise Refused("version or processing id")
    if msh[18] and msh[18] not in ("UNICODE UTF-8", "8859/1"):
        raise Refused("charset")
    if "PID" not in segs:
        raise Refused("ADT_A01 needs a PID segment")
    hd = C(msh[4]) + ["", "", ""]
    sender_ns, sender_uid, sender_kind = hd[0], hd[1], hd[2]
    entries: list[dict[str, Any]] = []
    # facility (HD.Organization from MSH-4): ENH by HD.3
    if sender_kind.upper() not in ("ENH", "NOORG"):
        raise Refused("only ENH senders in this floor")
    if not orgnr_ok(sender_uid):
        raise Refused("organisasjonsnummer fails its check digit")
    fac = {"resourceType": "Organization", "identifier": [{"system": ENH, "value": sender_uid}], "name": sender_ns}
    e, fac_url = entry("Organization", fac, ENH, sender_uid)
    entries.append(e)
    # patient
    pid = segs["PID"][0] + [""] * 31
    idents: list[dict[str, Any]] = []
    for rep in pid[3].split("~"):
        c = C(rep) + [""] * 8
        if not c[0]:
            continue
        authority, tcode = _unescape((rep.split("^") + [""] * 4)[3].split("&")[0]), c[4]
        if tcode.upper() in ("FNR", "DNR", "FHN") or "FNR" in authority.upper() or (not tcode and not authority and len(c[0]) == 11 and c[0].isdigit()):
            kind = person(c[0])
            if kind is None:
                raise Refused("national identity number is not a valid fødselsnummer, D-nummer or FH-nummer (check digits or date)")
            system = {"FNR": FNR, "DNR": DNR, "FHN": FHN}[kind]
            ident = {"system": system, "value": c[0], "type": {"coding": [{"system": "urn:oid:2.16.578.1.12.4.1.1.8116", "code": kind, "display": _PERSON_DISPLAY[kind]}]}}
        else:
            system = LOCAL
            ident = {"system": system, "value": c[0], "type": {"coding": [{"system": V2_0203, "code": tcode, "display": _0203[tcode]}]}}
        if authority:
            ident["assigner"] = {"display": authority}
        idents.append(ident)
    patient: dict[str, Any] = {"resourceType": "Patient", "identifier": idents}
    patient["name"] = [xpn(r, C) for r in pid[5].split("~") if r]
    patient["birthDate"] = fhir_date(pid[7])
    patient["gender"] = _GENDER[pid[8]]
    patient["address"] = [xad(r, C) for r in pid[11].split("~") if r]
    patient["telecom"] = [xtn(r, C) for r in pid[13].split("~") if r]
    patient["maritalStatus"] = cwe(pid[16], C)
    patient["communication"] = [{"language": cwe(pid[15], C)}]
    contacts = []
    for nk1 in segs.get("NK1", ()):
        nk1 = nk1 + [""] * 6
        ct: dict[str, Any] = {"name": xpn(nk1[2], C)}
        if nk1[3]:
            ct["relationship"] = [cwe(nk1[3], C)]
        tel = [xtn(r, C) for r in nk1[5].split("~") if r]
        if tel:
            ct["telecom"] = tel
        if nk1[4]:
            ct["address"] = xad(nk1[4], C)
        contacts.append(ct)
    patient["contact"] = contacts
    pd1 = segs["PD1"][0] + [""] * 5
    xon = C(pd1[3]) + [""] * 10
    gp_url = None
    if xon[9] or xon[2]:
        num = xon[9] or xon[2]
        gp = {"resourceType": "Organization", "identifier": [{"system": LOCAL, "value": num}], "name": xon[0]}
        gp_entry, gp_url = entry("Organization", gp, LOCAL, num)
    patient["generalPractitioner"] = [{"reference": gp_url}]
    pident = idents[0]
    p_entry, p_url = entry("Patient", patient, pident["system"], pident["value"])
    entries.append(p_entry)
    if gp_url:
        entries.append(gp_entry)
    # practitioners
    pv1 = segs["PV1"][0] + [""] * 46
    att_urls = [xcn_practitioner(r, C, entries) for r in pv1[7].split("~") if r]
    adm_url = xcn_practitioner(pv1[17], C, entries) if pv1[17] else None
    # locations from PV1-3
    pl = C(pv1[3]) + [""] * 4
    facility = pl[3].split("&")[0] or sender_ns
    lsys = f"urn:helsebro:local:{facility}:location"
    parent = None
    for k, (code, ptype, disp) in enumerate(((pl[0], "wa", "Ward"), (pl[1], "ro", "Room"), (pl[2], "bd", "Bed"))):
        if not code:
            continue
        key = "/".join(x.replace("%", "%25").replace("/", "%2F") for x in pl[: k + 1])
        loc = {"resourceType": "Location", "identifier": [{"system": lsys, "value": key, "assigner": {"display": facility}}], "name": code, "mode": "instance",
               "physicalType": {"coding": [{"system": LPT, "code": ptype, "display": disp}]}}
        if parent:
            loc["partOf"] = {"reference": parent}
        e, parent = entry("Location", loc, lsys, key)
        entries.append(e)
    # encounter
    vn = C(pv1[19]) + [""] * 5
    enc: dict[str, Any] = {"resourceType": "Encounter", "identifier": [{"system": LOCAL, "value": vn[0], "type": {"coding": [{"system": V2_0203, "code": vn[4], "display": _0203[vn[4]]}]}, "assigner": {"display": vn[3].split("&")[0]}}]}
    status = _STATUS[msg_type[1]]
    if status:
        enc["status"] = status
    cls = _CLASS[pv1[2]]
    enc["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": cls[0], "display": cls[1]}
    enc["subject"] = {"reference": p_url}
    enc["period"] = {"start": fhir_datetime(pv1[44])}
    enc["location"] = [{"location": {"reference": parent, "display": " ".join(x for x in pl[:3] if x)}, "status": "active"}]
    enc["participant"] = [{"type": [{"coding": [{"system": PTYPE, "code": "ATND", "display": "attender"}]}], "individual": {"reference": u}} for u in att_urls] + (
        [{"type": [{"coding": [{"system": PTYPE, "code": "ADM", "display": "admitter"}]}], "individual": {"reference": adm_url}}] if adm_url else [])
    enc["serviceProvider"] = {"reference": fac_url}
    enc["serviceType"] = cwe(pv1[10], C)
    pv2 = segs["PV2"][0] + [""] * 4
    enc["reasonCode"] = [cwe(pv2[3], C)]
    dg1 = segs["DG1"][0] + [""] * 7
    diag_use = _DIAG_ROLE[dg1[6]]
    enc["diagnosis"] = [{"condition": None, "use": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/diagnosis-role", "code": diag_use[0], "display": diag_use[1]}]}}]
    enc["hospitalization"] = {"admitSource": cwe(pv1[14], C)}
    enc_entry, enc_url = entry("Encounter", enc, LOCAL, vn[0])
    entries.append(enc_entry)
    pref = {"reference": p_url}
    p_id = p_url[9:]
    # allergy
    for al1 in segs.get("AL1", ()):
        al1 = al1 + [""] * 7
        a3 = C(al1[3]) + [""] * 4
        al: dict[str, Any] = {"resourceType": "AllergyIntolerance", "code": cwe(al1[3], C)}
        cat = _ALLERGY_CAT.get(al1[2].split("^")[0])
        if cat:
            al["category"] = [cat]
            al["type"] = "allergy"
        al["patient"] = pref
        v = rid("AllergyIntolerance", sender_ns, sender_uid, p_id, a3[0], a3[1], a3[3])
        al["identifier"] = [{"system": IDENT, "value": v}]
        e, _ = entry("AllergyIntolerance", al, IDENT, v)
        entries.append(e)
    # diagnosis
    d3 = C(dg1[3]) + [""] * 3
    cond = {"resourceType": "Condition", "code": cwe(dg1[3], C),
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}],
            "subject": pref, "encounter": {"reference": enc_url}}
    v = rid("Condition", sender_ns, sender_uid, vn[0], vn[3].split("&")[0], "", d3[0], d3[2], dg1[6])
    cond["identifier"] = [{"system": IDENT, "value": v}]
    e, cond_url = entry("Condition", cond, IDENT, v)
    enc["diagnosis"][0]["condition"] = {"reference": cond_url}
    entries.append(e)
    # observations
    for obx in segs.get("OBX", ()):
        obx = obx + [""] * 15
        o3 = C(obx[3]) + [""] * 3
        ob: dict[str, Any] = {"resourceType": "Observation", "status": "unknown", "code": cwe(obx[3], C), "subject": pref}
        if obx[14]:
            ob["effectiveDateTime"] = fhir_datetime(obx[14])
        if obx[2] == "NM":
            unit = obx[6].split("^")[0]
            ucum = _UCUM.get(unit)
            q: dict[str, Any] = {"system": "http://unitsofmeasure.org", "code": ucum} if ucum else {}
            q["value"] = number(obx[5])
            q["unit"] = unit
            ob["valueQuantity"] = q
        else:
            raise Refused("only NM observations in this floor")
        v = rid("Observation", sender_ns, sender_uid, p_id, o3[0], o3[2], obx[4], obx[14])
        ob["identifier"] = [{"system": IDENT, "value": v}]
        e, _ = entry("Observation", ob, IDENT, v)
        entries.append(e)
    return {"resourceType": "Bundle", "type": "transaction", "meta": TAG, "entry": entries}


def main() -> None:
    import argparse
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from convert import ADT_A01, stream

    from router.engine import freeze_long_lived
    from router.pipeline.convert import Converter
    from router.settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="messages per timed run")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    converter = Converter(load_settings(environ={}))
    feed = stream(ADT_A01, 200)
    global TAG  # the mapping set's version tag: a constant of the loaded set, as the engine's is
    first = converter.convert(feed[0])[0].bundle
    assert first is not None, "the bench message must convert"  # noqa: S101 - a bench sanity check
    TAG = first["meta"]
    differ = sum(orjson.dumps(converter.convert(data)[0].bundle) != convert(data) for data in feed)
    freeze_long_lived()

    def engine(data: bytes) -> bytes:
        return orjson.dumps(converter.convert(data)[0].bundle)

    best = {"floor": float("inf"), "engine": float("inf")}
    for _ in range(5):
        for name, fn in (("floor", convert), ("engine", engine)):
            start = time.perf_counter()
            for k in range(args.n):
                fn(feed[k % 200])
            best[name] = min(best[name], time.perf_counter() - start)
    same = "byte-identical" if not differ else f"DIFFERENT in {differ} of 200 messages (the mapping changed since it was written)"
    print(f"ADT^A01, 200 patients in turn, one core, best of 5 runs of {args.n:,}; outputs {same}")
    for name in ("floor", "engine"):
        print(f"  {name:6} {args.n / best[name]:>8,.0f} msg/s   {best[name] / args.n * 1e6:6.1f} us per message")
    print(f"  the engine takes {best['engine'] / best['floor']:.2f}x the floor's time")


if __name__ == "__main__":
    main()
