"""connection.py, inbound.py and outbound.py on the embedded transport and on RabbitMQ, with the same cases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

from adapters.amqp.connection import declare_topology, open_connection, queue_depth, topology
from adapters.amqp.inbound import Inbound
from adapters.amqp.outbound import Publisher
from router.errors import BrokerUnavailable
from router.testing import drain_queue, isolated_settings, publish, wait_until

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"


@pytest.fixture
def settings(broker_settings):
    """The shared broker fixture (tests/conftest.py): embedded and RabbitMQ."""
    return broker_settings


@pytest.fixture
def conn(settings):
    c = open_connection(settings)
    declare_topology(c, settings)
    yield c
    c.release()


def _kill_once_it_says(script: str, line: str) -> None:
    """Run *script* in a Python process, wait for it to print *line*, then SIGKILL it: a crash at that very point."""
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == line
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)


def _take_all(inbound, *, ack=True, timeout=1.0):
    out = []
    while (d := inbound.next(timeout)) is not None:
        out.append(d)
        if ack:
            d.ack()
    return out


class TestTopology:
    def test_declares_durable_queues(self, settings, conn):
        """Declaring creates every queue empty, and declaring again is harmless."""
        declare_topology(conn, settings)
        names = settings.engine.broker.names
        assert [queue_depth(conn, n) for n in (names.inbound, names.dead_letter, names.replies)] == [0, 0, 0]
        assert all(q.durable for q in topology(settings).queues)

    def test_quorum_only_on_rabbitmq(self, settings):
        """Queues ask for the quorum type on RabbitMQ only; the inbound one asks for a single active consumer on both,
        and on RabbitMQ for the dead-letter queue as the place for a message over the broker's delivery limit."""
        topo = topology(settings)
        # Review H163: a dead-letter queue has a delivery limit of its own that no browse reaches (RabbitMQ 4.x sets 20).
        assert topo.dead_letter.queue_arguments == ({"x-queue-type": "quorum", "x-delivery-limit": 2**31 - 1} if settings.broker_url else {})
        over_the_limit = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": settings.engine.broker.names.dead_letter}
        assert topo.inbound.queue_arguments == ({"x-queue-type": "quorum", "x-single-active-consumer": True, **over_the_limit} if settings.broker_url else {"x-single-active-consumer": True})

    @pytest.mark.integration
    def test_unreachable_broker_is_transient(self, tmp_path):
        """A broker that is not there raises BrokerUnavailable, never a kombu error."""
        s = isolated_settings(tmp_path, broker_url="amqp://guest:guest@127.0.0.1:1/%2F")
        c = open_connection(s)
        with pytest.raises(BrokerUnavailable):
            declare_topology(c, s)


class TestPublishAndConsume:
    def test_round_trip_keeps_bytes_and_headers(self, settings, conn):
        """Bytes (not UTF-8 too), headers and the message id arrive as published."""
        body = "MSH|^~\\&|Ærlig Østby\r".encode("iso-8859-1")
        Publisher(conn, settings).publish_inbound(body, headers={"x-test": "1"}, message_id="m-1")
        inbound = Inbound(conn, settings)
        inbound.start()
        [d] = _take_all(inbound)
        assert (d.body, d.headers["x-test"], d.message_id) == (body, "1", "m-1")
        inbound.stop()

    def test_dead_letter_and_reply_queues(self, settings, conn):
        """dead_letter() and reply() land on their own queues with their headers."""
        p = Publisher(conn, settings)
        p.dead_letter(b"raw", headers={"x-helsebro-reason": "why"})
        p.reply(b"MSA|AA", headers={"x-helsebro-ack-code": "AA"})
        names = settings.engine.broker.names
        [(dead, raw)] = drain_queue(settings, names.dead_letter)
        [(reply, ack)] = drain_queue(settings, names.replies)
        assert (dead["x-helsebro-reason"], raw) == ("why", b"raw")  # quorum queues add x-delivery-count
        assert (reply["x-helsebro-ack-code"], ack) == ("AA", b"MSA|AA")

    def test_unroutable_publish_fails(self, settings, conn):
        """A message no queue is bound for is a failed publish, not a silent drop."""
        names = settings.engine.broker.names.model_copy(update={"routing_key": "nobody-listens"})
        engine = settings.engine.model_copy(update={"broker": settings.engine.broker.model_copy(update={"names": names})})
        wrong = settings.model_copy(update={"engine": engine})
        with pytest.raises(BrokerUnavailable):
            Publisher(conn, wrong).publish_inbound(b"x")

    def test_order_is_publish_order(self, settings, conn):
        """Messages published back to back come out in the same order."""
        publish(settings, [f"m{i:03d}".encode() for i in range(150)])
        inbound = Inbound(conn, settings)
        inbound.start()
        got = [d.body for d in _take_all(inbound)]
        assert got == [f"m{i:03d}".encode() for i in range(150)]
        inbound.stop()

    def test_depth_counts_ready_messages(self, settings, conn):
        """queue_depth counts the messages that wait, not the ones a consumer holds."""
        publish(settings, [b"a", b"b", b"c"])
        assert queue_depth(conn, settings.engine.broker.names.inbound) == 3
        inbound = Inbound(conn, settings)
        inbound.start()
        held = inbound.next(5)
        assert held is not None
        wait_until(lambda: queue_depth(conn, settings.engine.broker.names.inbound) <= 2, 10, what="depth drops")
        inbound.stop()


@pytest.mark.integration
def test_depth_of_a_missing_queue_is_unavailable(tmp_path):
    """Asking RabbitMQ for a queue that does not exist raises BrokerUnavailable."""
    c = open_connection(isolated_settings(tmp_path, broker_url=RABBIT))
    with pytest.raises(BrokerUnavailable):
        queue_depth(c, f"helsebro.no-such-queue.{os.getpid()}")
    c.release()


class TestRedelivery:
    def test_unacked_comes_back_after_a_clean_stop(self, settings, conn):
        """A delivery not acked before stop() is delivered again, in its place."""
        publish(settings, [b"first", b"second"])
        inbound = Inbound(conn, settings)
        inbound.start()
        first = inbound.next(5)
        assert first is not None and first.body == b"first"
        inbound.stop()
        inbound = Inbound(conn, settings)
        inbound.start()
        assert [d.body for d in _take_all(inbound)] == [b"first", b"second"]
        inbound.stop()

    def test_a_delivery_that_comes_back_is_marked_redelivered(self, settings, conn):
        """A delivery given back unacked comes again with `redelivered` set, as RabbitMQ sets it; a new one without."""
        publish(settings, [b"first"])
        inbound = Inbound(conn, settings)
        inbound.start()
        first = inbound.next(5)
        assert first is not None and not first.redelivered
        inbound.stop()
        publish(settings, [b"second"])
        inbound = Inbound(conn, settings)
        inbound.start()
        assert [(d.body, d.redelivered) for d in _take_all(inbound)] == [(b"first", True), (b"second", False)]
        inbound.stop()

    def test_unacked_survives_a_killed_consumer(self, settings, conn):
        """A consumer killed with SIGKILL while holding deliveries loses none of them."""
        publish(settings, [b"one", b"two", b"three"])
        script = textwrap.dedent(f"""
            import sys, time
            from router.settings import load_settings
            from adapters.amqp.connection import open_connection
            from adapters.amqp.inbound import Inbound
            s = load_settings(environ={{}}, config_dir={str(settings.config_dir)!r}, data_dir={str(settings.data_dir)!r}, broker_url={settings.broker_url!r})
            c = open_connection(s)
            i = Inbound(c, s); i.start()
            d = i.next(10)
            print("holding", d.body.decode(), flush=True)
            time.sleep(600)
        """)
        _kill_once_it_says(script, "holding one")
        inbound = Inbound(conn, settings)
        inbound.start()
        got = []
        wait_until(lambda: got.extend(d.body for d in _take_all(inbound, timeout=0.5)) or len(got) >= 3, 30, what="all three back")
        assert got == [b"one", b"two", b"three"]
        inbound.stop()

    def test_a_standby_takes_over_a_killed_consumers_deliveries_first(self, settings, conn):
        """A standby consumer, already waiting when the active one is killed holding a delivery, gets that
        delivery back first, then the rest: nothing stays stranded until the next restart, order holds."""
        publish(settings, [b"one", b"two", b"three"])
        script = textwrap.dedent(f"""
            import time
            from router.settings import load_settings
            from adapters.amqp.connection import open_connection
            from adapters.amqp.inbound import Inbound
            s = load_settings(environ={{}}, config_dir={str(settings.config_dir)!r}, data_dir={str(settings.data_dir)!r}, broker_url={settings.broker_url!r})
            i = Inbound(open_connection(s), s); i.start()
            d = i.next(10)
            print("holding", d.body.decode(), flush=True)
            time.sleep(600)
        """)
        standby = Inbound(conn, settings)
        with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as proc:
            try:
                assert proc.stdout.readline().strip() == "holding one"
                standby.start()
                assert standby.next(0.5) is None  # the killed one is still the active consumer
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
        got = []
        wait_until(lambda: got.extend(_take_all(standby, timeout=0.5)) or len(got) >= 3, 30, what="all three")
        assert [d.body for d in got] == [b"one", b"two", b"three"]
        assert got[0].redelivered  # the killed one held it
        standby.stop()

    def test_a_killed_consumers_delivery_from_a_shared_queue_comes_back_to_a_live_one(self, settings, conn):
        """A process killed holding a delivery from a queue without a single active consumer (the dead-letter
        queue) gives it back to a consumer already running, without that one reconnecting, as RabbitMQ does."""
        topo = topology(settings)
        Publisher(conn, settings).dead_letter(b"orphan", headers={"x-helsebro-reason": "r"})
        live = Inbound(conn, settings, queues=[topo.replies])
        live.start()  # its channel is open before the kill, as a running `dlq` reader's or engine's is
        script = textwrap.dedent(f"""
            from router.settings import load_settings
            from adapters.amqp.connection import open_connection, topology
            from adapters.amqp.inbound import Inbound
            import time
            s = load_settings(environ={{}}, config_dir={str(settings.config_dir)!r}, data_dir={str(settings.data_dir)!r}, broker_url={settings.broker_url!r})
            i = Inbound(open_connection(s), s, queues=[topology(s).dead_letter]); i.start()
            d = i.next(10)
            print("holding", d.body.decode(), flush=True)
            time.sleep(600)
        """)
        try:
            _kill_once_it_says(script, "holding orphan")
            live.start([topo.dead_letter])  # the same channel: no reconnect, no new channel's recovery
            got = []
            wait_until(lambda: got.extend(_take_all(live, timeout=0.3)) or got, 30, what="the orphan back")
            assert [(d.body, d.redelivered) for d in got] == [(b"orphan", True)]
        finally:
            live.stop()

    def test_a_rejected_message_goes_to_the_queues_dead_letter_target(self, settings, conn):
        """`basic.reject(requeue=False)` on a queue declared with `x-dead-letter-*` arguments dead-letters the
        message there, its headers kept and the reason added (`x-first-death-reason: rejected`), as on RabbitMQ."""
        from kombu import Queue

        dead_letter = settings.engine.broker.names.dead_letter
        source = Queue(f"{dead_letter}.src-{uuid.uuid4().hex[:8]}", durable=True, auto_delete=False,
                       queue_arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letter})
        channel = conn.channel()
        try:
            source.bind(channel).declare()
            Publisher(conn, settings).publish_to("", str(source.name), b"raw", headers={"x-helsebro-test": "1"})
            message = wait_until(lambda: source.bind(channel).get(no_ack=False), 10, what="the message")
            message.reject(requeue=False)
            wait_until(lambda: queue_depth(conn, dead_letter) == 1, 10, what="the message in the dead-letter queue")
            [(headers, body)] = drain_queue(settings, dead_letter)
            assert (body, headers["x-helsebro-test"]) == (b"raw", "1")
            assert (headers["x-first-death-reason"], headers["x-first-death-queue"]) == ("rejected", str(source.name))
            assert queue_depth(conn, str(source.name)) == 0
        finally:
            source.bind(conn.channel()).delete()



def _adt_bodies(count: int) -> list[bytes]:
    from router.testing import adt_message
    from schemas.identity import first_valid_fnr

    return [adt_message("A01", control_id=f"D{i}", fnr=first_valid_fnr(1 + i % 28, 2, 81, 300 + i, synthetic=True), local_id=f"L{i}", visit=f"V{i}") for i in range(count)]


@pytest.mark.integration
class TestPublishToPartition:
    """With partitions > 1, publish_inbound routes straight to the patient's partition queue (RabbitMQ only)."""

    @pytest.fixture
    def world(self, tmp_path):
        """Settings factory sharing one tag (so one topology), with per-call broker overrides; queues deleted after."""
        from router.testing import delete_queues

        tag, made = f"pp{os.getpid()}{uuid.uuid4().hex[:6]}", []

        def make(**broker):
            s = isolated_settings(tmp_path / f"s{len(made)}", broker_url=RABBIT, tag=tag, broker={"partitions": 4, **broker})
            made.append(s)
            return s

        yield make
        delete_queues(made[0])

    @pytest.mark.parametrize("pipelined", [False, True])
    def test_lands_in_the_patients_partition_not_the_intake(self, world, pipelined):
        """Each message waits in partition_of's queue; the inbound queue (the intake's) stays empty."""
        from router.routing.partition import partition_of

        s = world()
        c = open_connection(s)
        try:
            topo = declare_topology(c, s)
            p = Publisher(c, s, pipelined=pipelined)
            bodies = _adt_bodies(12)
            for body in bodies:
                p.publish_inbound(body)
            p.flush()
            p.close()
            expected = [sum(1 for b in bodies if partition_of(b, 4) == k) for k in range(4)]
            assert sum(1 for n in expected if n) > 1, "the bodies spread over partitions"
            assert [queue_depth(c, str(q.name)) for q in topo.partitions] == expected
            assert queue_depth(c, s.engine.broker.names.inbound) == 0
        finally:
            c.release()

    def test_switched_off_goes_through_the_intake(self, world):
        """`broker.publish_to_partition: false` publishes with the plain routing key, to the inbound queue."""
        s = world(publish_to_partition=False)
        publish(s, _adt_bodies(12))
        c = open_connection(s)
        try:
            assert queue_depth(c, s.engine.broker.names.inbound) == 12
            assert all(queue_depth(c, str(q.name)) == 0 for q in topology(s).partitions)
        finally:
            c.release()

    @pytest.mark.parametrize("pipelined", [False, True])
    def test_more_partitions_than_bound_is_a_failed_publish(self, world, pipelined):
        """A publisher configured with more partitions than the broker has bound gets an error, never a silent drop."""
        from router.routing.partition import partition_of

        engine_side, sender_side = world(), world(partitions=64)
        beyond = next(b for b in _adt_bodies(60) if partition_of(b, 64) >= 4)
        c = open_connection(engine_side)
        try:
            declare_topology(c, engine_side)  # four partitions bound; the sender believes in 64
            p = Publisher(c, sender_side, pipelined=pipelined)
            with pytest.raises(BrokerUnavailable):
                p.publish_inbound(beyond)
                p.flush()
        finally:
            c.release()


class TestEmbeddedDurability:
    """What adapters/amqp/_folder.py promises beyond kombu's filesystem transport (embedded only)."""

    @pytest.fixture
    def embedded(self, tmp_path):
        s = isolated_settings(tmp_path)
        c = open_connection(s)
        declare_topology(c, s)
        yield s, c
        c.release()

    @staticmethod
    def _leftovers(settings):
        return sorted(p.name for p in (settings.data_dir / "broker").rglob(".tmp-*"))

    def test_publish_fsyncs_the_queue_folder(self, embedded, monkeypatch):
        """A publish returns only after the queue folder holding the renamed message is fsynced, not the file alone."""
        settings, conn = embedded
        synced, real = [], os.fsync

        def spy(fd):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        monkeypatch.setattr(os, "fsync", spy)
        Publisher(conn, settings).publish_inbound(b"x")
        assert str((settings.data_dir / "broker" / "queue").resolve()) in synced

    def test_a_full_disk_leaves_no_half_message(self, embedded, monkeypatch):
        """A publish the disk refuses raises BrokerUnavailable and leaves neither a message nor its half-written file."""
        import errno

        settings, conn = embedded

        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(BrokerUnavailable):
            Publisher(conn, settings).publish_inbound(b"x" * 4096)
        monkeypatch.undo()
        assert self._leftovers(settings) == []
        assert queue_depth(conn, settings.engine.broker.names.inbound) == 0

    def test_a_publisher_killed_mid_write_leaves_nothing_behind(self, embedded):
        """The half-written file of a publisher killed with SIGKILL is never delivered and is gone once a channel opens again."""
        settings, _conn = embedded
        script = textwrap.dedent(f"""
            import os, time
            from router.settings import load_settings
            from adapters.amqp.connection import open_connection
            from adapters.amqp.outbound import Publisher
            s = load_settings(environ={{}}, config_dir={str(settings.config_dir)!r}, data_dir={str(settings.data_dir)!r}, broker_url=None)
            def stuck(fd):
                print("writing", flush=True)
                time.sleep(600)
            os.fsync = stuck
            Publisher(open_connection(s), s).publish_inbound(b"half" * 1000)
        """)
        _kill_once_it_says(script, "writing")
        later = open_connection(settings)
        try:
            declare_topology(later, settings)  # a new channel recovers what dead processes left
            assert self._leftovers(settings) == []
            assert queue_depth(later, settings.engine.broker.names.inbound) == 0
        finally:
            later.release()

    def test_order_survives_a_reboot(self, embedded, monkeypatch):
        """A message published after the machine restarted (its monotonic clock back near zero) comes after those waiting from before."""
        import time as time_module

        settings, conn = embedded
        with monkeypatch.context() as m:
            m.setattr(time_module, "monotonic_ns", lambda: 9 * 10**15)  # 104 days of uptime
            publish(settings, [b"before"])
        with monkeypatch.context() as m:
            m.setattr(time_module, "monotonic_ns", lambda: 10**9)  # a second after the next boot
            publish(settings, [b"after"])
        inbound = Inbound(conn, settings)
        inbound.start()
        assert [d.body for d in _take_all(inbound)] == [b"before", b"after"]
        inbound.stop()

    def test_two_live_consumers_never_share_a_message(self, embedded):
        """Two consumers of one queue without a single active consumer (a dead-letter queue), each holding what it took unacked, split it without overlap."""
        settings, conn = embedded
        p = Publisher(conn, settings)
        for i in range(20):
            p.dead_letter(f"m{i:02d}".encode(), headers={"x-helsebro-reason": "r"})
        other = open_connection(settings)
        queue = [topology(settings).dead_letter]
        a, b = Inbound(conn, settings, queues=queue), Inbound(other, settings, queues=queue)
        try:
            a.start()
            b.start()
            got_a, got_b = [], []
            while True:
                da, db = a.next(0.2), b.next(0.2)
                if da is None and db is None:
                    break
                got_a += [da.body] if da else []
                got_b += [db.body] if db else []
            assert not set(got_a) & set(got_b)
            assert sorted(got_a + got_b) == [f"m{i:02d}".encode() for i in range(20)]
        finally:
            a.stop()
            b.stop()
            other.release()

    def test_a_second_engine_stands_by(self, embedded):
        """A second consumer of an ordered queue on the same data folder gets nothing while the first consumes, then takes over in order."""
        settings, conn = embedded
        publish(settings, [b"A01", b"A08", b"A03"])
        other = open_connection(settings)
        first, second = Inbound(conn, settings), Inbound(other, settings)
        try:
            first.start()
            second.start()
            held = first.next(5)
            assert held is not None and held.body == b"A01"
            assert second.next(0.3) is None  # on RabbitMQ: x-single-active-consumer
            first.stop()  # A01 unacked: it goes back to its place
            assert [d.body for d in _take_all(second)] == [b"A01", b"A08", b"A03"]
        finally:
            first.stop()
            second.stop()
            other.release()

    def test_a_removed_unacked_folder_is_an_error_not_an_empty_queue(self, embedded):
        """With its `unacked/` folder removed under it (an operator's clean-up), a consumer says the broker is
        unavailable instead of seeing an empty queue forever; a fresh connection then delivers what waits."""
        import shutil

        settings, conn = embedded
        publish(settings, [b"first"])
        inbound = Inbound(conn, settings)
        inbound.start()
        try:
            assert [d.body for d in _take_all(inbound, timeout=0.5)] == [b"first"]
            shutil.rmtree(settings.data_dir / "broker" / "unacked")
            publish(settings, [b"second"])
            with pytest.raises(BrokerUnavailable):
                for _ in range(10):
                    inbound.next(0.2)
        finally:
            inbound.stop()
        again = open_connection(settings)
        inbound = Inbound(again, settings)
        inbound.start()
        try:
            assert [d.body for d in _take_all(inbound, timeout=0.5)] == [b"second"]
        finally:
            inbound.stop()
            again.release()

    def test_bindings_are_fsynced(self, tmp_path, monkeypatch):
        """Declaring a binding returns only after the bindings file and the rename into `control/` are on disk."""
        settings = isolated_settings(tmp_path / "fresh")
        control = str((settings.data_dir / "broker" / "control").resolve())
        synced, real = [], os.fsync

        def spy(fd):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)

        monkeypatch.setattr(os, "fsync", spy)
        c = open_connection(settings)
        try:
            declare_topology(c, settings)
        finally:
            c.release()
        assert control in synced
        assert any(os.path.dirname(p) == control and os.path.basename(p).startswith(".tmp-") for p in synced)

    def test_a_stale_bindings_temp_file_is_removed_at_open(self, embedded):
        """The temporary file of a binding write cut short by a crash is removed when a channel opens; bindings still work."""
        settings, _conn = embedded
        stale = settings.data_dir / "broker" / "control" / f".tmp-{uuid.uuid4().hex}"
        stale.write_bytes(b"[[\"half")
        later = open_connection(settings)
        try:
            declare_topology(later, settings)
            assert self._leftovers(settings) == []
            Publisher(later, settings).publish_inbound(b"x")
            assert queue_depth(later, settings.engine.broker.names.inbound) == 1
        finally:
            later.release()

    def test_a_rejected_message_without_a_dead_letter_target_is_kept(self, embedded, capsys):
        """`basic.reject(requeue=False)` on a queue with no `x-dead-letter-*` arguments keeps the message in
        `rejected/` and logs it (RabbitMQ would drop it): the embedded broker loses nothing silently."""
        settings, conn = embedded
        publish(settings, [b"refused"])
        [published] = (settings.data_dir / "broker" / "queue").glob("*.msg")
        as_published = (published.name, published.read_bytes())
        inbound = topology(settings).inbound
        channel = conn.channel()
        message = wait_until(lambda: inbound.bind(channel).get(no_ack=False), 10, what="the message")
        message.reject(requeue=False)
        channel.close()
        assert queue_depth(conn, inbound.name) == 0
        [kept] = (settings.data_dir / "broker" / "rejected").iterdir()
        assert (kept.name, kept.read_bytes()) == as_published
        out = capsys.readouterr().out
        assert "embedded_message_rejected" in out and "refused" not in out

    def test_an_unreadable_message_file_is_set_aside(self, embedded, capsys):
        """A message file that does not decode (a bad disk block, a hand edit) is moved to `damaged/` and reported; the messages behind it still come."""
        settings, conn = embedded
        publish(settings, [b"first", b"second", b"third"])
        queue_folder = settings.data_dir / "broker" / "queue"
        files = sorted(p for p in queue_folder.iterdir() if p.name.endswith(".msg"))
        files[1].write_bytes(b"\x00garbage{")
        inbound = Inbound(conn, settings)
        inbound.start()
        try:
            assert [d.body for d in _take_all(inbound)] == [b"first", b"third"]
        finally:
            inbound.stop()
        damaged = settings.data_dir / "broker" / "damaged"
        assert [p.name for p in damaged.iterdir()] == [files[1].name]
        assert "embedded_message_unreadable" in capsys.readouterr().out


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def _policies_allowed() -> bool:
    try:
        _rabbitmqctl("list_policies")
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@pytest.mark.integration
class TestDeliveryLimit:
    """RabbitMQ 4.x gives quorum queues a delivery limit (20); a policy sets one on 3.x the same way."""

    @pytest.fixture
    def limited(self, tmp_path):
        if not _policies_allowed():
            pytest.skip("rabbitmqctl cannot set a policy here")
        tag = uuid.uuid4().hex[:10]
        settings = isolated_settings(tmp_path, broker_url=RABBIT, tag=tag, broker={"partitions": 2})
        _rabbitmqctl("set_policy", f"h-limit-{tag}", f"^helsebro\\..*{tag}", '{"delivery-limit": 1}', "--apply-to", "queues")
        c = open_connection(settings)
        try:
            declare_topology(c, settings)
            yield settings, c
        finally:
            _rabbitmqctl("clear_policy", f"h-limit-{tag}")
            from adapters.amqp.connection import delete_topology

            delete_topology(c, settings)
            c.release()

    @pytest.mark.parametrize("queue", ["inbound", "partition"])
    def test_a_message_over_the_limit_is_dead_lettered_not_dropped(self, limited, queue):
        """A message the broker has handed out more often than its limit goes to the dead-letter queue, the reason in its headers."""
        settings, c = limited
        topo = topology(settings)
        q = topo.inbound if queue == "inbound" else topo.partitions[1]
        Publisher(c, settings).publish_to("", str(q.name), b"raw", headers={"x-helsebro-test": "1"})
        for _ in range(3):  # each consumer that goes away holding it counts a delivery
            inbound = Inbound(c, settings, queues=[q])
            inbound.start()
            got = inbound.take(1, 2.0)
            inbound.stop()
            if not got:
                break
        wait_until(lambda: queue_depth(c, settings.engine.broker.names.dead_letter) == 1, 10, what="the message in the dead-letter queue")
        [dead] = drain_queue(settings, settings.engine.broker.names.dead_letter)
        assert dead[1] == b"raw"
        assert dead[0]["x-first-death-reason"] == "delivery_limit"


@pytest.mark.integration
def test_queues_an_older_version_declared_are_used_as_they_are(tmp_path):
    """A quorum queue declared before its dead-letter arguments existed is kept, not refused (RabbitMQ answers
    406 to a change of arguments): the engine still starts, and the topology names the queue for the operator."""
    from adapters.amqp.connection import delete_topology

    settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 2})
    topo = topology(settings)
    c = open_connection(settings)
    try:
        channel = c.channel()
        older = {"x-queue-type": "quorum", "x-single-active-consumer": True}
        for q in (topo.inbound, topo.partitions[1]):
            channel.queue_declare(str(q.name), durable=True, auto_delete=False, arguments=older)
        channel.close()
        declared = declare_topology(c, settings)
        assert set(declared.without_dead_letter) == {str(topo.inbound.name), str(topo.partitions[1].name)}
        publish(settings, [b"still works"])
        assert sum(queue_depth(c, str(q.name)) for q in (topo.inbound, *topo.partitions)) == 1
    finally:
        delete_topology(c, settings)
        c.release()
