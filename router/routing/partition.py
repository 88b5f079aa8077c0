"""Pick a delivery's partition from its patient, cheaply, before it is converted.

Two ways lead into partition queue `<inbound>.p<k>`, and both ask
`partition_of(body, n)`:
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
