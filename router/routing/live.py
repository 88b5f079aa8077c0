"""What a routes.yaml edit may change in a running engine, and what only a restart may.

A hot reload (router/reload.py, run by router/engine.py) swaps in new routes
between batches. The routes themselves (match, when, to) and the options a
destination reads per message (a queue destination's rendering options, a
FHIR destination's on_failure) are read through the swapped reference, so they
change live. Anything fixed when the worker started is not: the queues and
exchanges it declared (a destination's queue, its retry ladder's TTLs), the
delivery worker threads and their FHIR clients, the AppRec watch of kith
destinations, and the duplicate windows settle and the KITH guard hold. An edit
that touches those is refused, saying what to restart for, and the old routes
run on: applied halfway, messages would go to queues nobody declared or consumes.
"""

from __future__ import annotations

from router.errors import ConfigError
from router.routing.model import FhirDestination, QueueDestination, RoutesConfig

__all__ = ["RestartNeeded", "needs_restart"]


class RestartNeeded(ConfigError):
    """A routes.yaml edit a running engine cannot take; `filename` is the file, logged with the refusal."""

    def __init__(self, reason: str, *, filename: str) -> None:
        super().__init__(reason)
        self.filename = filename


def needs_restart(running: RoutesConfig, new: RoutesConfig) -> list[str]:
    """Say, one line each, what in *new* differs from *running* in a way only a restart applies; empty when none does."""
    out = [f"destination {n} added" for n in sorted(new.destinations.keys() - running.destinations.keys())]
    out += [f"destination {n} removed" for n in sorted(running.destinations.keys() - new.destinations.keys())]
    for name in sorted(running.destinations.keys() & new.destinations.keys()):
        old, now = running.destinations[name], new.destinations[name]
        if old.kind != now.kind:
            out.append(f"destination {name}: kind changed from {old.kind} to {now.kind}")
        elif isinstance(old, QueueDestination) and isinstance(now, QueueDestination):
            if old.queue != now.queue:
                out.append(f"destination {name}: queue changed (queues are declared at start)")
            if (old.format == "kith") != (now.format == "kith"):
                out.append(f"destination {name}: format changed to or from kith (the AppRec watch starts with the worker)")
            elif old.format == "kith" and old != now:
                # The AppRec watch and helsebro_apprecs_overdue hold the receiver and mapping they started with: a new
                # receiver_her_id live would count every message sent to it as overdue until a restart.
                out.append(f"destination {name}: kith options changed (the AppRec watch holds its receiver and mapping from start)")
        elif isinstance(old, FhirDestination) and isinstance(now, FhirDestination):
            if old.server != now.server:
                out.append(f"destination {name}: server changed (its delivery worker's client is built at start)")
            if old.retry != now.retry:
                out.append(f"destination {name}: retry changed (its retry queues are declared at start)")
    if running.duplicates != new.duplicates:
        out.append("duplicates changed (the duplicate windows are set at start)")
    return out
