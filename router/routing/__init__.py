"""Routes: which destinations each converted message goes to (config/routes.yaml).

The model and its loader are model.py; compiled matching is match.py; the
patient partition of a raw delivery is partition.py. Delivering is router/delivery/'s.
"""

from __future__ import annotations

from router.routing.model import (
    Destination,
    DuplicatesConfig,
    FhirDestination,
    OnFailure,
    QueueDestination,
    RecordDestination,
    RetryConfig,
    Route,
    RouteMatch,
    RoutesConfig,
    default_routes,
    load_routes,
)

__all__ = [
    "Destination",
    "DuplicatesConfig",
    "FhirDestination",
    "OnFailure",
    "QueueDestination",
    "RecordDestination",
    "RetryConfig",
    "Route",
    "RouteMatch",
    "RoutesConfig",
    "default_routes",
    "load_routes",
]
