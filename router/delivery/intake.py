"""Split the inbound stream into patient partitions: read a cheap patient key, forward the bytes, ack.

Only what was published with the plain inbound routing key (foreign
publishers, or `broker.publish_to_partition: false`) comes this way: Helsebro's
own publishers route straight to the partition (router/routing/partition.py
says why order per patient holds across both ways, and when it does not).
With `broker.partitions` > 1 every worker subscribes to the inbound queue,
which has a single active consumer, so one intake at a time forwards in
arrival order; each partition queue then has one active consumer too, so
per-patient order survives any number of workers. The intake neither decodes
nor converts (router/routing/partition.py reads the key from raw bytes):
converting is the partition workers' work, in parallel. A delivery holding
messages of several patients (an FHS/BHS batch) is forwarded one message at a
time, each to its patient's partition (partition_pieces). A batch is acked
only after every forward is confirmed: a crash in between forwards it again,
and the record's applied keys keep the copies from being applied twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapters.amqp.inbound import ack_all
from router.routing.partition import partition_pieces

if TYPE_CHECKING:
    from adapters.amqp.inbound import Delivery
    from adapters.amqp.outbound import Publisher

__all__ = ["Intake"]


class Intake:
    """Forwards inbound deliveries to `<inbound>.p<k>`."""

    def __init__(self, inbound_queue: str, partitions: int) -> None:
        self._names = [f"{inbound_queue}.p{k}" for k in range(partitions)]
        self._partitions = partitions

    def __call__(self, publisher: Publisher, deliveries: Sequence[Delivery]) -> None:
        """Forward *deliveries* (confirmed, in order), then ack them.

        Raises:
            BrokerUnavailable: a publish, its confirm or the ack failed; the deliveries come again.
        """
        for d in deliveries:
            pieces = partition_pieces(d.body, self._partitions)
            for i, (k, body) in enumerate(pieces):
                # A batch about several patients goes one message at a time (partition_pieces says why), each
                # with its own id: the same on every redelivery of the batch, so a receiver can tell them apart.
                mid = d.message_id if len(pieces) == 1 or not d.message_id else f"{d.message_id}.{i + 1}"
                publisher.publish_to("", self._names[k], body, headers=d.headers, message_id=mid)
        publisher.flush()
        ack_all(deliveries, embedded=False)
