"""Pick a delivery's partition from its patient, cheaply, before it is converted.

Two ways lead into partition queue `<inbound>.p<k>`, and both ask
`partition_pieces(body, n)` (`partition_of` for each message of a batch):
- Helsebro's own publishers (Publisher.publish_inbound: `helsebro send`,
  `helsebro dlq replay`, the test kit, the bench) publish straight to it, with
  routing key `<routing_key>.p<k>` on the inbound exchange: one broker hop;
- anything else publishes with the plain routing key to the inbound queue, and
  the intake (router/delivery/intake.py, one active at a time) forwards it.
One consumer is active per partition, so two messages about one patient are
settled in the order they reached the partition, while different patients
spread over the workers.

Why order per patient still holds: the partition is a pure function of the
bytes and n, so a patient's messages all go to one partition whichever way
they come. Each way keeps its own order: RabbitMQ keeps the order of what one
channel publishes to one queue, and the intake forwards in arrival order
(single active consumer, confirmed before acked, a crash replays its batch
in order). What the two ways do not share is the delay: a message published
the plain way waits in the inbound queue and in the intake's batch, and
one published the direct way meanwhile reaches the partition first. So one
patient's messages can be reordered only when they arrive by both ways within
that delay (the inbound queue's backlog plus one intake batch), i.e. when a
foreign publisher and a Helsebro publisher (or a sender switching ways) send
about the same patient at nearly the same time. Messages from two publishers
have no order between them before they reach the broker either; a sender that
needs its own order keeps to one way. `broker.publish_to_partition: false`
sends everything through the intake.

Every publisher must use the engine's `broker.partitions` (they read the same
config/engine.yaml). A publisher that believes in more partitions than are
bound gets its publish returned unroutable (mandatory): an error, never a
silent loss. One that believes in fewer (but more than 1) would send some
patients to another partition than the intake does: the same hazard as
changing `partitions` while messages wait, and the same rule, drain first.

The key is read from the raw bytes in microseconds, not by the mapping:
- HL7 v2: PID-3's national person number as the mapping recognises it
  (router/mapping/library.py `_system`): a repetition whose type code (CX-5, any
  case) or assigning authority (CX-4, or its OID) says national, or one with
  neither whose digits are a valid number; the number's digits, spaces dropped,
  the fødselsnummer before a D-nummer before an FH-nummer, as the Patient's
  identity prefers (PID-2's too, mapped beside PID-3). Else the first
  repetition's value and assigning authority.
  Separators come from MSH-1/MSH-2. Why not CX-5 alone: the record files
  `…^^^^fnr`, `…^^^NOR` and a bare valid number under one Patient, and a key
  that read only an upper-case CX-5 sent them to other partitions than
  `…^^^NOR^FNR`: that patient's messages were applied out of order.
- KITH XML: in the first `<Patient>`, the national number among its
  `Ident/Id` (typed by `TypeId/@V`) and `OffId` (KITH 1.x, typed by
  `TypeOffId/@V`), read as for HL7 v2; else the first `<Id>` after it. Why:
  in a KITH 1.x message the first `<Id>` is a fastlege's or a lab's HER-id,
  and one patient's epikriser and lab reports spread over partitions.
- Anything else (no PID, a batch without one, unreadable bytes): the empty
  key, which lands in partition 0 — still in order, just not spread.
- A batch (FHS/BHS, or several messages in one delivery): `partition_pieces`
  splits one about several patients per message, both ways, so each message
  goes where that patient's single messages go; one about one patient goes
  whole to that patient's partition. A short batch (BTS-1/FTS-1 disagree) goes
  whole, by its first message's key (p0 when the batch header comes first), so
  the converter reports what was lost: its patients' order is then not kept.
Two messages about one person that carry different identifiers (one only a
hospital number, one the fødselsnummer) may land in different partitions; the
record treats them as different identities too until they are linked.

`jump_hash` (Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash
Algorithm", 2014) moves only 1/n of the keys when n grows by one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

from schemas.identity import classify_person_id, declares_national

__all__ = ["jump_hash", "partition_of", "partition_pieces", "patient_key"]

_RANK = {"FNR": 0, "DNR": 1, "FHN": 2}  # the Patient's identity prefers them in this order (PID.Patient.yaml)
_XML_PATIENT = re.compile(rb"<(?:[\w.-]+:)?Patient\b.*?<(?:[\w.-]+:)?Id>\s*([^<\s]+)\s*<", re.DOTALL)
_XML_PATIENT_ELEMENT = re.compile(rb"<(?:[\w.-]+:)?Patient\b[^>]*>(.*?)</(?:[\w.-]+:)?Patient>", re.DOTALL)
_XML_NUMBER = re.compile(  # an Id or OffId, and the V of the TypeId or TypeOffId right after it
    rb"<(?:[\w.-]+:)?(?:Id|OffId)>\s*([^<]*?)\s*</(?:[\w.-]+:)?(?:Id|OffId)>\s*"
    rb"(?:<(?:[\w.-]+:)?Type(?:Off)?Id\b[^>]*?\bV=[\"']([^\"']*)[\"'])?"
)


def patient_key(body: bytes) -> bytes:
    """Return the bytes that name the patient a delivery is about, or b"" when none is found."""
    head = body.lstrip(b"\x0b\xef\xbb\xbf \t\r\n")
    if head[:1] == b"<":
        element = _XML_PATIENT_ELEMENT.search(head, 0, 200_000)
        if element:
            national = _best_person_number((n, t.strip().upper(), b"") for n, t in _XML_NUMBER.findall(element.group(1)))
            if national:
                return national
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
    sub = head[7:8] if len(head) > 8 and head[7:8] != field_sep else b"&"
    pid3 = fields[3].split(rep) if len(fields) > 3 and fields[3] else []
    pid2 = fields[2].split(rep) if len(fields) > 2 and fields[2] else []
    national = _national_number(pid3 + pid2, comp, sub)  # PID-2 too: the mapping maps it, and the identity prefers its FNR to a local PID-3
    if national or not pid3:
        return national
    first = pid3[0].split(comp)
    return first[0] + b"|" + (first[3] if len(first) > 3 else b"")


def _national_number(reps: list[bytes], comp: bytes, sub: bytes) -> bytes:
    """The digits of the person number the mapping takes as the Patient's identity among PID-3's *reps*, or b""."""

    def numbers() -> Iterator[tuple[bytes, bytes, bytes]]:
        for one in reps:
            parts = one.split(comp)
            hd = parts[3].split(sub) if len(parts) > 3 else [b""]
            authority = hd[0] or (hd[1] if len(hd) > 1 else b"")  # CX-4.1, else its universal id (as cx_system)
            yield parts[0], (parts[4] if len(parts) > 4 else b"").strip().upper(), authority.strip().upper()

    return _best_person_number(numbers())


def _best_person_number(numbers: Iterable[tuple[bytes, bytes, bytes]]) -> bytes:
    """Of (number, type code, authority), upper case, the digits the Patient's identity prefers, or b"".

    A number counts when its type or authority says national, or when it has neither, and its digits
    are a valid fødselsnummer, D-nummer or FH-nummer: what router/mapping/library.py's `_system` files
    under a national system (an H-nummer is not one).
    """
    best, rank = b"", len(_RANK)
    for number, kind, authority in numbers:
        declared = declares_national(kind.decode("latin-1"), authority.decode("latin-1"))  # the mapping library's markers, one definition
        if not number or (not declared and (kind or authority)):
            continue
        person = classify_person_id(number.decode("latin-1"))
        if person is not None and _RANK.get(person.kind, rank) < rank:
            best, rank = number.replace(b" ", b""), _RANK[person.kind]
    return best


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


_SECOND_HEADER = re.compile(rb"[\r\n\x0b\x1c][ \t]*MSH", re.IGNORECASE)


def partition_pieces(body: bytes, partitions: int) -> list[tuple[int, bytes]]:
    """Return (partition, bytes) for each piece a raw delivery goes as, in its order.

    One message, or a delivery whose messages are all about one patient, goes whole, to that
    patient's partition. A batch (FHS/BHS, or several messages in one delivery) about several
    patients goes one message at a time, each to its own patient's partition, its bytes as the
    converter cuts them from the batch (adapters/hl7v2/decode.py `split_messages`): sent whole to one
    partition, a patient's batched message and a later single one could be settled by two workers
    in either order. Its BTS-1/FTS-1 counts are checked first: a short batch goes whole, as before,
    so the converter still reports the shortfall (its first patient's partition, or p0 with a batch
    header first).
    """
    whole = [(partition_of(body, partitions), body)]
    if partitions <= 1 or body.lstrip(b"\x0b\xef\xbb\xbf \t\r\n")[:1] == b"<":
        return whole
    headers = _SECOND_HEADER.finditer(body)
    if next(headers, None) is None or (body.lstrip(b"\xef\xbb\xbf \t\r\n")[:3].upper() == b"MSH" and next(headers, None) is None):
        return whole  # one message: the common case, without the split below
    from adapters.hl7v2.decode import check_batch_counts, split_messages  # only for a batch: a publisher stays light

    if check_batch_counts(body) is not None:
        return whole
    pieces = [(partition_of(m.data, partitions), m.data) for m in split_messages(body)]
    if len({k for k, _ in pieces}) <= 1:
        return [(pieces[0][0], body)] if pieces else whole
    return pieces


def partition_of(body: bytes, partitions: int) -> int:
    """Return the partition in [0, partitions) of a raw delivery."""
    if partitions <= 1:
        return 0
    key = patient_key(body)
    if not key:
        return 0
    digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return jump_hash(digest, partitions)
