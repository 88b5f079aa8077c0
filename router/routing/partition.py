"""Pick a delivery's partition from its patient, cheaply, before it is converted.

The intake (router/delivery/intake.py) calls `partition_of(body, n)` on every
inbound delivery and forwards it to partition queue `p<k>`; one consumer is
active per partition, so two messages about one patient are settled in the
order they arrived, while different patients spread over the workers.

The key is read from the raw bytes in microseconds, not by the mapping:
- HL7 v2: PID-3, the repetition whose identifier type (CX-5) is a national
  one (FNR, DNR, HNR, FHN, NNNOR …), else the first; its value and assigning
  authority. Separators come from MSH-1/MSH-2.
- KITH XML: the text of the first `<Id>` under the first `<Patient>`.
- Anything else (no PID, a batch without one, unreadable bytes): the empty
  key, which lands in partition 0 — still in order, just not spread.
Two messages about one person that carry different identifiers (one only a
hospital number, one the fødselsnummer) may land in different partitions; the
record treats them as different identities too until they are linked.

`jump_hash` (Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash
Algorithm", 2014) moves only 1/n of the keys when n grows by one.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["jump_hash", "partition_of", "patient_key"]

_NATIONAL = {b"FNR", b"DNR", b"HNR", b"FHN", b"NNNOR", b"NNNO", b"NI", b"SS"}
_XML_PATIENT = re.compile(rb"<(?:[\w.-]+:)?Patient\b.*?<(?:[\w.-]+:)?Id>\s*([^<\s]+)\s*<", re.DOTALL)


def patient_key(body: bytes) -> bytes:
    """Return the bytes that name the patient a delivery is about, or b"" when none is found."""
    head = body.lstrip(b"\x0b\xef\xbb\xbf \t\r\n")
    if head[:1] == b"<":
        m = _XML_PATIENT.search(head, 0, 200_000)
        return m.group(1) if m else b""
    if head[:3] != b"MSH" or len(head) < 8:
        return b""
    field_sep = head[3:4]
    comp, rep = head[4:5], head[5:6]
    start = _pid_start(head)
    if start < 0:
        return b""
    end = min((i for i in (head.find(b"\r", start), head.find(b"\n", start)) if i >= 0), default=len(head))
    fields = head[start:end].split(field_sep)
    if len(fields) < 4 or not fields[3]:
        return b""
    reps = fields[3].split(rep)
    for one in reps:
        parts = one.split(comp)
        if len(parts) > 4 and parts[4] in _NATIONAL and parts[0]:
            return parts[0]
    first = reps[0].split(comp)
    return first[0] + b"|" + (first[3] if len(first) > 3 else b"")


def _pid_start(data: bytes) -> int:
    for sep in (b"\rPID", b"\nPID"):
        i = data.find(sep)
        if i >= 0:
            return i + 1
    return -1


def jump_hash(key: int, buckets: int) -> int:
    """Return the bucket in [0, buckets) for a 64-bit *key* (jump consistent hash)."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def partition_of(body: bytes, partitions: int) -> int:
    """Return the partition in [0, partitions) of a raw delivery."""
    if partitions <= 1:
        return 0
    key = patient_key(body)
    if not key:
        return 0
    digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return jump_hash(digest, partitions)
