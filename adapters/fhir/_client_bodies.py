"""Read what an external FHIR server answers: transaction-responses, errors, Retry-After.

Pure functions from response parts to the engine's types; sending, retrying and
logging belong to client.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from router.contracts import AppliedEntry, EntryOutcome, FhirJson
from router.errors import RecordUnavailable, Refused

__all__ = ["applied", "entry_version", "refused", "retry_after"]

_REASON_MAX = 200  # characters of a server's diagnostics kept in a Refused reason
_FNR = re.compile(r"(?<!\d)\d{11}(?!\d)")  # fnr/dnr (11-digit national ids) a server may echo back
_CODE = re.compile(r"[a-z][a-z-]{0,39}")  # an issue-type code (FHIR's IssueType: invalid, business-rule, …)
_PATH = re.compile(r"[A-Za-z][A-Za-z0-9_.\[\]()-]{0,119}")  # a FHIRPath such as Patient.identifier[0].value: names, no values
_LOCATION = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([^/?#]+))?/?(?:[?#]|$)")
# HAPI FHIR says in each entry's response.outcome when it did nothing (its storage response codes).
_STATUS = re.compile(r"[1-5][0-9][0-9]")  # an HTTP status code, as a transaction-response entry's status starts
_DELTA_SECONDS = re.compile(r"[0-9]+")  # Retry-After as delta-seconds
_HAPI_UNCHANGED = frozenset({"SUCCESSFUL_UPDATE_NO_CHANGE", "SUCCESSFUL_CREATE_WITH_CONDITIONAL_MATCH"})


def retry_after(value: str, now: datetime) -> float | None:
    """Return the seconds a Retry-After header asks for (delta-seconds or HTTP-date); None if unreadable.

    None, not 0: a header the client cannot read ("soon", "-5", "1.5") must fall back
    to the backoff, not be taken as "retry at once" and hammer a server that is
    already overloaded. Delta-seconds are ASCII digits only (RFC 9110 §10.2.3):
    str.isdigit() also accepts "²", which float() then refuses with a ValueError
    that turned a 503 into a dead letter.
    """
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def refused(response: httpx.Response) -> Refused:
    """Turn a 4xx into Refused: the reason is the HTTP status and the issue's code, never the server's words.

    A server's diagnostics may quote the resource ("Patient Ola Nordmann born …"):
    they become the Refused's `detail` (national ids masked, cut short), which only
    the dead letter keeps; the reason is logged and counted, so it holds no free text.
    """
    reason, location, detail = f"destination refused with HTTP {response.status_code}", None, None
    try:
        body = orjson.loads(response.content)
        issue = body["issue"][0] if body.get("resourceType") == "OperationOutcome" else {}
    except (orjson.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError):
        issue = {}
    if isinstance(issue, dict):
        code = issue.get("code")
        if isinstance(code, str) and _CODE.fullmatch(code):
            reason = f"{reason}: {code}"
        if issue.get("diagnostics"):
            detail = _FNR.sub("***********", str(issue["diagnostics"]))
            detail = detail if len(detail) <= _REASON_MAX else detail[: _REASON_MAX - 1] + "…"
        expression = issue.get("expression") or issue.get("location") or []
        if isinstance(expression, list) and expression and isinstance(expression[0], str) and _PATH.fullmatch(expression[0]):
            location = expression[0]
    return Refused(reason, location=location, detail=detail)


def entry_version(response: FhirJson, location_version: str | None) -> str:
    """The version a transaction or history entry reports: from its location, else its ETag."""
    if location_version:
        return location_version
    etag = str(response.get("etag") or "")
    return etag.removeprefix("W/").strip('"')


def applied(entry: Any, request: Any) -> AppliedEntry:
    """Read one transaction-response entry, knowing the request entry it answers."""
    response = entry.get("response") if isinstance(entry, dict) else None
    if not isinstance(response, dict):
        raise RecordUnavailable("destination answered a transaction entry without a response")
    status = str(response.get("status", "")).split(" ", 1)[0]
    if not status.startswith("2"):
        # The reason is logged: only a status code goes in, never the server's own text in its place.
        code = status if _STATUS.fullmatch(status) else "(no status code)"
        raise Refused(f"destination refused a transaction entry with HTTP {code}")
    match = _LOCATION.search(str(response.get("location") or ""))
    method = str(request.get("method", "")).upper() if isinstance(request, dict) else ""
    resource_type, id_ = (match.group(1), match.group(2)) if match else _target(request)
    version = entry_version(response, match.group(3) if match else None)
    outcome: EntryOutcome
    if method == "DELETE":
        outcome = "deleted"
    elif status == "201":
        outcome = "created"
    elif status == "204" or _said_unchanged(response.get("outcome")):
        outcome = "unchanged"
    else:
        outcome = "updated"
    return AppliedEntry(resource_type, id_, int(version) if version.isdigit() else 0, outcome)


def _target(request: Any) -> tuple[str, str]:
    """Type and id from a request url like `Patient/abc` when the response has no location."""
    url = str(request.get("url", "")) if isinstance(request, dict) else ""
    path = url.split("?", 1)[0].strip("/").split("/")
    return (path[0], path[1] if len(path) > 1 else "")


def _said_unchanged(outcome: Any) -> bool:
    if not isinstance(outcome, dict):
        return False
    codes = {
        c.get("code")
        for issue in outcome.get("issue") or [] if isinstance(issue, dict)
        for c in (issue.get("details") or {}).get("coding") or [] if isinstance(c, dict)
    }
    return bool(codes & _HAPI_UNCHANGED)
