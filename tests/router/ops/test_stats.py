"""Queue numbers from the broker, and where things are, without passwords."""

from __future__ import annotations

import pytest

from adapters.amqp.connection import declare_topology, open_connection
from router.ops.stats import broker_location, queue_stats, record_location, redact_url, watched_queues
from router.testing import delete_queues, isolated_settings, publish

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture
def settings(broker_settings):
    """The shared broker fixture (tests/conftest.py): embedded and RabbitMQ."""
    return broker_settings


def _stats(settings, **kwargs):
    conn = open_connection(settings)
    try:
        return {q.role: q for q in queue_stats(conn, settings, **kwargs)}
    finally:
        conn.release()


class TestRedactUrl:
    def test_drops_the_password_from_the_authority(self):
        """The user stays, the password goes."""
        assert redact_url("amqp://guest:s3cret@rabbit:5672/%2F") == "amqp://guest@rabbit:5672/%2F"

    def test_drops_a_password_query_parameter(self):
        """libpq's password= parameter is dropped, other parameters stay."""
        assert redact_url("postgresql://app@db/helsebro?password=s3cret&schema=x") == "postgresql://app@db/helsebro?schema=x"

    def test_leaves_a_url_without_credentials(self):
        """A URL without user info comes back unchanged."""
        assert redact_url("amqp://rabbit:5672/%2F") == "amqp://rabbit:5672/%2F"


class TestLocations:
    def test_broker_and_record_without_password(self, tmp_path):
        """The broker and record URLs are shown without their passwords."""
        s = isolated_settings(tmp_path, broker_url="amqp://u:pw1@rabbit/%2F", record_url="postgresql://app:pw2@db/hb")
        assert broker_location(s) == {"transport": "rabbitmq", "location": "amqp://u@rabbit/%2F"}
        assert record_location(s) == {"kind": "postgresql", "location": "postgresql://app@db/hb"}

    def test_embedded_defaults(self, tmp_path):
        """Without URLs the broker is the embedded folder and the record the SQLite file."""
        s = isolated_settings(tmp_path)
        assert broker_location(s) == {"transport": "embedded", "location": str((tmp_path / "data" / "broker").resolve())}
        assert record_location(s) == {"kind": "sqlite", "location": str(s.sqlite_path.resolve())}


class TestQueueStats:
    def test_lists_every_watched_queue_in_order(self, settings):
        """Inbound, dead-letter and replies queues come back in the order watched_queues gives."""
        publish(settings, [])
        conn = open_connection(settings)
        try:
            stats = queue_stats(conn, settings, interval=0)
        finally:
            conn.release()
        assert [(s.role, s.name) for s in stats] == [(q.role, q.name) for q in watched_queues(settings)]

    def test_depth_change_per_second(self, settings):
        """Messages that arrive between the two samples show as a positive depth change per second."""
        publish(settings, [b"one"])
        stats = _stats(settings, interval=0.5, sleep=lambda _s: publish(settings, [b"two", b"three"]))
        inbound = stats["inbound"]
        assert inbound.depth == 3
        assert inbound.depth_change_per_s is not None and inbound.depth_change_per_s > 0
        assert stats["replies"].depth_change_per_s == 0

    def test_one_sample_has_no_rate(self, settings):
        """With interval 0 the depth is read once and the change is None."""
        publish(settings, [b"one"])
        stats = _stats(settings, interval=0)
        assert stats["inbound"].depth == 1
        assert stats["inbound"].depth_change_per_s is None

    def test_consumers_only_where_the_broker_knows(self, settings):
        """RabbitMQ reports a consumer count; the embedded transport reports None."""
        publish(settings, [])
        inbound = _stats(settings, interval=0)["inbound"]
        assert inbound.consumers == (0 if settings.broker_url else None)

    @pytest.mark.integration
    def test_missing_queue_on_rabbitmq(self, tmp_path):
        """A queue that was never declared shows as not existing, and the others are still read."""
        s = isolated_settings(tmp_path, broker_url=RABBIT)
        conn = open_connection(s)
        try:
            declare_topology(conn, s)
            conn.default_channel.queue_delete(s.engine.broker.names.replies)
            stats = {q.role: q for q in queue_stats(conn, s, interval=0)}
        finally:
            conn.release()
            delete_queues(s)
        assert stats["replies"].exists is False and stats["replies"].depth is None
        assert stats["inbound"].exists is True and stats["inbound"].depth == 0
