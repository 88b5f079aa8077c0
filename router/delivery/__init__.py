"""Delivery to destinations: the intake that partitions by patient, forwards to broker-fed destinations, and the workers of queued destinations.

Routing decisions are router/routing/'s; settling a batch is router/pipeline/settle.py's.
"""

from __future__ import annotations

from router.delivery.forward import Forwarder, forward_id
from router.delivery.intake import Intake
from router.delivery.worker import DestinationStats, DestinationWorker, split_partitions

__all__ = ["DestinationStats", "DestinationWorker", "Forwarder", "Intake", "forward_id", "split_partitions"]
