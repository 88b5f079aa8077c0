"""`helsebro send` and `helsebro run` as a user runs them: subprocesses, exit codes, output, on both transports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from router.testing import adt_message, delete_queues, drain_queue, isolated_settings, queue_depth, settings_env, wait_until
from schemas.identity import FNR_SYSTEM, first_valid_fnr

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
HELSEBRO = [str(Path(sys.executable).parent / "helsebro")]


@pytest.fixture
def settings(broker_settings):
    """The shared broker fixture (tests/conftest.py): embedded and RabbitMQ."""
    return broker_settings


def _two_workers_running(proc: subprocess.Popen) -> None:
    """Wait until the supervisor *proc* has two workers, each with its SIGTERM handler in (ready to stop cleanly)."""
    wait_until(lambda: len(_children(proc.pid)) == 2 and all(_catches(p, signal.SIGTERM) for p in _children(proc.pid)),
               30, what="two workers running")


def _worker_1_exits(tmp_path: Path, settings, code: int) -> dict[str, str]:
    """The environment of a `run --workers 2` whose worker 1 exits *code* at every start, before it imports anything."""
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if sys.argv[-2:] == ['--worker-index', '1']:\n"
        f"    os._exit({code})\n")
    env = _env(settings)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(crash), env.get("PYTHONPATH")) if p)
    return env


def _env(settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env.update(settings_env(settings))
    return env


def _cli(settings, *args, timeout=60):
    return subprocess.run([*HELSEBRO, *args], env=_env(settings), capture_output=True, text=True, timeout=timeout)


def _write_messages(folder, count, *, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    fnrs = []
    for i in range(start, start + count):
        fnr = first_valid_fnr(1 + i % 28, 1 + i % 12, 80, 100 + i, synthetic=True)
        fnrs.append(fnr)
        (folder / f"m{i:03d}.hl7").write_bytes(adt_message("A01", control_id=f"CLI{i:04d}", fnr=fnr, local_id=f"L{i}", visit=f"V{i}"))
    return fnrs


def _events(stderr):
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _patient(settings, fnr):
    from adapters.fhir.record import open_record

    record = open_record(settings)
    try:
        return record.search("Patient", {"identifier": f"{FNR_SYSTEM}|{fnr}"})
    finally:
        record.close()


class TestSend:
    def test_sends_files_and_folders_in_order(self, settings, tmp_path):
        """Each file becomes one message; folders are searched recursively and sorted; one line per file."""
        _write_messages(tmp_path / "in" / "sub", 2)
        single = tmp_path / "single.hl7"
        single.write_bytes(b"MSH|^~\\&|X\r")
        (tmp_path / "in" / "notes.md").write_text("not a message")
        result = _cli(settings, "send", str(single), str(tmp_path / "in"))
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"sent {single} ({len(single.read_bytes())} bytes)"
        assert [line.split()[1].rsplit("/", 1)[-1] for line in lines[:3]] == ["single.hl7", "m000.hl7", "m001.hl7"]
        assert "3 sent, 0 failed" in lines[-1]
        assert queue_depth(settings, settings.engine.broker.names.inbound) == 3

    def test_a_folder_search_skips_hidden_files_and_folders(self, settings, tmp_path):
        """`._m000.hl7` (macOS AppleDouble) and files under `.cache/` are not sent; a hidden file named itself is."""
        _write_messages(tmp_path / "in", 1)
        (tmp_path / "in" / "._m000.hl7").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
        _write_messages(tmp_path / "in" / ".cache", 1, start=1)
        named = tmp_path / "in" / ".cache" / "m001.hl7"
        result = _cli(settings, "send", str(tmp_path / "in"), str(named))
        assert result.returncode == 0, result.stderr
        assert [line.split()[1] for line in result.stdout.splitlines()[:-1]] == [str(tmp_path / "in" / "m000.hl7"), str(named)]
        assert queue_depth(settings, settings.engine.broker.names.inbound) == 2

    def test_a_folder_with_no_message_files_is_said_and_exits_0(self, settings, tmp_path):
        """Nothing to send is not a failure (exit 0), but the folder that gave nothing is named on stderr."""
        (tmp_path / "drop").mkdir()
        result = _cli(settings, "send", str(tmp_path / "drop"))
        assert result.returncode == 0, result.stderr
        assert f"helsebro send: {tmp_path / 'drop'}: no message files" in result.stderr
        assert "0 sent, 0 failed" in result.stdout

    def test_nothing_to_send_opens_no_broker_connection(self, tmp_path):
        """An empty folder with RabbitMQ down: send failed on the connection (exit 1) though it had nothing to publish.
        Now it says there was nothing to send and exits 0; on the embedded broker it makes no broker folders either."""
        (tmp_path / "drop").mkdir()
        down = isolated_settings(tmp_path / "down", broker_url="amqp://guest:guest@127.0.0.1:1/%2F")
        result = _cli(down, "send", str(tmp_path / "drop"))
        assert result.returncode == 0, result.stderr
        assert f"helsebro send: {tmp_path / 'drop'}: no message files" in result.stderr
        assert result.stdout.splitlines() == ["0 sent, 0 failed, 0 files"]
        embedded = isolated_settings(tmp_path / "embedded", broker_url=None)
        result = _cli(embedded, "send", str(tmp_path / "drop"))
        assert result.returncode == 0, result.stderr
        assert not (embedded.data_dir / "broker").exists()

    def test_missing_path_is_a_usage_error(self, settings, tmp_path):
        """A path that does not exist exits 2 and sends nothing."""
        result = _cli(settings, "send", str(tmp_path / "nope.hl7"))
        assert result.returncode == 2
        assert "no such file" in result.stderr

    @pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux /proc: a file whose read fails even for root")
    def test_a_file_that_cannot_be_read_fails_alone_without_a_traceback(self, settings, tmp_path):
        """An unreadable file is reported as failed, exit 1, and the files after it are still sent."""
        _write_messages(tmp_path / "in", 1)
        result = _cli(settings, "send", "/proc/self/mem", str(tmp_path / "in"))
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stdout.splitlines()[0].startswith("failed /proc/self/mem: ")
        assert "1 sent, 1 failed" in result.stdout.splitlines()[-1]
        assert queue_depth(settings, settings.engine.broker.names.inbound) == 1

    @pytest.mark.integration
    def test_a_broker_lost_mid_run_stops_the_send_in_order(self, tmp_path):
        """The connection dies mid-run and the broker is back a moment later: nothing after the failed file is sent
        (that would put it ahead of the one that failed), each file not sent is named, exit 1, no traceback."""
        settings = isolated_settings(tmp_path, broker_url=RABBIT)
        folder = tmp_path / "in"
        folder.mkdir()
        for i in range(6):  # ~20 kB each: the proxy cuts the first connection inside the third
            (folder / f"m{i}.hl7").write_bytes(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|SEND%d|P|2.5\rNTE|1||%s\r" % (i, b"x" * 20_000))
        env = {**_env(settings), "HELSEBRO_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{_cutting_proxy(cut_after=45_000)}/%2F"}
        try:
            result = subprocess.run([*HELSEBRO, "send", str(folder)], env=env, capture_output=True, text=True, timeout=120)
            assert result.returncode == 1
            assert "Traceback" not in result.stderr
            lines = result.stdout.splitlines()
            assert lines[:2] == [f"sent {f} ({f.stat().st_size} bytes)" for f in (folder / "m0.hl7", folder / "m1.hl7")]
            assert lines[2].startswith(f"failed {folder / 'm2.hl7'}: ")
            assert lines[3:6] == [f"not sent {folder / f'm{i}.hl7'}" for i in (3, 4, 5)]
            assert lines[-1] == "2 sent, 1 failed, 3 not sent, 6 files"
            assert "m2.hl7" in result.stderr  # where to start again
            assert queue_depth(settings, settings.engine.broker.names.inbound) == 2  # m0 and m1, nothing after the failure
        finally:
            delete_queues(settings)

    @pytest.mark.integration
    def test_a_file_the_broker_refuses_says_why(self, tmp_path):
        """A file larger than RabbitMQ's max message size (128 MiB by default, 16 MiB from 4.0) is refused: its line gives the
        broker's own reason, so the user knows to split it rather than send it again; the run stops there, exit 1."""
        settings = isolated_settings(tmp_path, broker_url=RABBIT)
        folder = tmp_path / "in"
        folder.mkdir()
        (folder / "1.hl7").write_bytes(b"MSH|^~\\&|A\r")
        with (folder / "2.hl7").open("wb") as f:
            f.truncate(128 * 1024 * 1024 + 1)  # sparse: no disk, and above every default limit
        (folder / "3.hl7").write_bytes(b"MSH|^~\\&|A\r")
        try:
            result = _cli(settings, "send", str(folder), timeout=120)
            assert result.returncode == 1, result.stdout
            lines = result.stdout.splitlines()
            assert lines[1].startswith(f"failed {folder / '2.hl7'}: ")
            assert "larger than configured max size" in lines[1]
            assert lines[2] == f"not sent {folder / '3.hl7'}"
            assert "Traceback" not in result.stderr
        finally:
            delete_queues(settings)


def _cutting_proxy(*, cut_after: int) -> int:
    """Forward a local port to RabbitMQ; cut the first connection once the client sent *cut_after* bytes; forward later ones."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    first = [True]

    def pump(src, dst, limit):
        sent = 0
        try:
            while data := src.recv(65536):
                sent += len(data)
                if sent > limit:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def serve():
        while True:
            client, _ = server.accept()
            upstream = socket.create_connection(("127.0.0.1", 5672))
            limit, first[0] = (cut_after if first[0] else 1 << 62), False
            threading.Thread(target=pump, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, 1 << 62), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


class TestRun:
    def test_until_idle_settles_everything_and_exits_0(self, settings, tmp_path):
        """run --until-idle applies what send queued, logs each settlement by control id, and exits 0."""
        fnrs = _write_messages(tmp_path / "in", 5)
        assert _cli(settings, "send", str(tmp_path / "in")).returncode == 0
        result = _cli(settings, "run", "--until-idle", "0.5")
        assert result.returncode == 0, result.stderr[-2000:]
        events = _events(result.stderr)
        assert events[0]["event"] == "engine_started"
        settled = [e for e in events if e["event"] == "delivery_settled"]
        assert [e["control_id"] for e in settled] == [f"CLI{i:04d}" for i in range(5)]
        assert {e["outcome"] for e in settled} == {"applied"}
        assert all(len(_patient(settings, f)) == 1 for f in fnrs)

    def test_same_message_twice_changes_nothing(self, settings, tmp_path):
        """The second copy of a message through the queue is settled as a duplicate, never applied; versions stay at 1."""
        [fnr] = _write_messages(tmp_path / "in", 1)
        path = str(tmp_path / "in" / "m000.hl7")
        assert _cli(settings, "send", path, path).returncode == 0
        result = _cli(settings, "run", "--until-idle", "0.5")
        assert result.returncode == 0, result.stderr[-2000:]
        outcomes = [e["outcome"] for e in _events(result.stderr) if e["event"] == "delivery_settled"]
        assert outcomes == ["applied", "duplicate"]
        [patient] = _patient(settings, fnr)
        assert patient["meta"]["versionId"] == "1"

    def test_an_empty_file_is_dead_lettered_not_dropped(self, settings, tmp_path):
        """A delivery of no bytes, or blank lines only, holds no message: it is settled as a dead letter with its reason, never acked unseen."""
        empty, blank = tmp_path / "empty.hl7", tmp_path / "blank.hl7"
        empty.write_bytes(b"")
        blank.write_bytes(b"\r\n  \r\n")
        assert _cli(settings, "send", str(empty), str(blank)).returncode == 0
        result = _cli(settings, "run", "--until-idle", "0.5")
        assert result.returncode == 0, result.stderr[-2000:]
        settled = [e for e in _events(result.stderr) if e["event"] == "delivery_settled"]
        assert [(e["outcome"], e["stage"]) for e in settled] == [("dead_lettered", "convert")] * 2
        dead = drain_queue(settings, settings.engine.broker.names.dead_letter)
        assert [body for _headers, body in dead] == [b"", b"\r\n  \r\n"]
        assert all("no message" in headers["x-helsebro-reason"] for headers, _body in dead)

    def test_sigterm_finishes_and_exits_0(self, settings, tmp_path):
        """SIGTERM stops the engine cleanly with exit 0 after what it took is settled."""
        fnrs = _write_messages(tmp_path / "in", 3)
        with subprocess.Popen([*HELSEBRO, "run"], env=_env(settings), stderr=subprocess.PIPE, text=True) as proc:
            try:
                assert _cli(settings, "send", str(tmp_path / "in")).returncode == 0
                wait_until(lambda: all(_patient(settings, f) for f in fnrs), 60, what="all applied")
                proc.send_signal(signal.SIGTERM)
                _, stderr = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert proc.returncode == 0
        assert _events(stderr)[-1]["event"] == "engine_stopped"

    def test_sigterm_mid_stream_acks_what_it_settled_and_leaves_the_rest(self, settings, tmp_path):
        """SIGTERM while a backlog is worked: exit 0, and a restart settles exactly the rest, none of them a second time."""
        total = 600
        _write_messages(tmp_path / "in", total)
        assert _cli(settings, "send", str(tmp_path / "in"), timeout=300).returncode == 0
        log = tmp_path / "first.log"
        with log.open("wb") as err:
            proc = subprocess.Popen([*HELSEBRO, "run"], env=_env(settings), stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_until(lambda: '"delivery_settled"' in log.read_text(errors="replace") or proc.poll() is not None, 90, interval=0.005, what="a first message settled")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(90) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        first = [e["outcome"] for e in _events(log.read_text()) if e["event"] == "delivery_settled"]
        assert 0 < len(first) < total, "the SIGTERM did not land mid-stream: the test proved nothing"
        result = _cli(settings, "run", "--until-idle", "1", timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        second = [e["outcome"] for e in _events(result.stderr) if e["event"] == "delivery_settled"]
        assert set(first) == set(second) == {"applied"}, "a message settled before the SIGTERM came back (it was not acked)"
        assert len(first) + len(second) == total


class TestRunTopology:
    @pytest.mark.integration
    def test_a_dead_letter_queue_an_older_version_declared_is_used_and_named(self, tmp_path):
        """Review H163: a dead-letter queue declared before Helsebro gave it a delivery limit of its own (RabbitMQ 4.x
        then drops a letter browsed 20 times) is used as it is, its letters kept, and named at start as a warning."""
        from adapters.amqp.connection import open_connection

        settings = isolated_settings(tmp_path, broker_url=RABBIT)
        name = settings.engine.broker.names.dead_letter
        conn = open_connection(settings)
        try:
            channel = conn.channel()
            channel.queue_declare(name, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
            channel.close()
            (tmp_path / "in").mkdir()
            (tmp_path / "in" / "bad.hl7").write_bytes(b"not hl7")
            assert _cli(settings, "send", str(tmp_path / "in")).returncode == 0
            result = _cli(settings, "run", "--until-idle", "1", timeout=120)
            assert result.returncode == 0, result.stderr[-2000:]
            [event] = [e for e in _events(result.stderr) if e["event"] == "dead_letter_queue_without_delivery_limit"]
            assert event["level"] == "warning" and event["queues"] == [name] and "policy" in event["fix"]
            assert queue_depth(settings, name) == 1
        finally:
            conn.release()
            delete_queues(settings)

    def test_a_destination_removed_from_routes_is_named_with_its_depth(self, settings, tmp_path):
        """Review H163: a destination taken out of routes.yaml leaves its queues, and what waits in them, behind; AMQP
        cannot list queues, so the engine keeps the destinations it declared and names, at start, each queue of one no
        longer configured that still holds messages (on RabbitMQ: that still exists), with its depth, as a warning."""
        tag = settings.engine.broker.names.inbound.rsplit(".", 1)[1]
        old_routes = {
            "destinations": {"record": {"kind": "record"}, "lab": {"kind": "queue", "queue": "lab.adt", "format": "passthrough"},
                             "ekstern": {"kind": "fhir", "server": {"base_url": "http://127.0.0.1:9/fhir"}}},
            "routes": [{"name": "all", "match": {"format": "hl7v2"}, "to": ["record", "lab"]}],
        }
        new_routes = {"destinations": {"record": {"kind": "record"}}, "routes": [{"name": "all", "match": {"format": "hl7v2"}, "to": ["record"]}]}
        old = isolated_settings(tmp_path, broker_url=settings.broker_url, tag=tag, routes=old_routes)
        fnrs = _write_messages(tmp_path / "in", 1)
        try:
            assert _cli(old, "send", str(tmp_path / "in")).returncode == 0
            result = _cli(old, "run", "--until-idle", "1", timeout=120)
            assert result.returncode == 0, result.stderr[-2000:]
            assert not [e for e in _events(result.stderr) if e["event"] == "destination_not_configured"]
            new = isolated_settings(tmp_path, broker_url=settings.broker_url, tag=tag, routes=new_routes)
            result = _cli(new, "run", "--until-idle", "1", timeout=120)
            assert result.returncode == 0, result.stderr[-2000:]
            named = {e["queue"]: (e["level"], e["destination"], e["depth"]) for e in _events(result.stderr) if e["event"] == "destination_not_configured"}
            assert named[f"lab.adt.{tag}"] == ("warning", "lab", 1)
            dlq = f"{old.engine.broker.names.destination_prefix}.ekstern.dlq"
            assert (named.get(dlq) == ("warning", "ekstern", 0)) is bool(settings.broker_url)  # the embedded broker cannot tell an empty queue from none
            assert fnrs[0] not in result.stderr
        finally:
            if settings.broker_url:
                delete_queues(old)


class TestRunWorkers:
    def test_workers_need_rabbitmq(self, tmp_path):
        """--workers 2 on the embedded transport is refused with exit 2: its ordered queue has one active consumer, so a second worker adds nothing."""
        settings = isolated_settings(tmp_path)
        result = _cli(settings, "run", "--workers", "2", "--until-idle", "0.5")
        assert result.returncode == 2
        assert "needs RabbitMQ" in result.stderr

    @pytest.mark.integration
    def test_send_publishes_straight_to_the_patients_partition(self, tmp_path):
        """With partitions, `send` puts each file in its patient's partition queue (one broker hop); the intake's queue stays empty."""
        from adapters.amqp.connection import topology
        from router.routing.partition import partition_of

        settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 4})
        try:
            _write_messages(tmp_path / "in", 12)
            result = _cli(settings, "send", str(tmp_path / "in"))
            assert result.returncode == 0, result.stderr
            bodies = [f.read_bytes() for f in sorted((tmp_path / "in").glob("*.hl7"))]
            expected = [sum(1 for b in bodies if partition_of(b, 4) == k) for k in range(4)]
            assert [queue_depth(settings, str(q.name)) for q in topology(settings).partitions] == expected
            assert queue_depth(settings, settings.engine.broker.names.inbound) == 0
        finally:
            delete_queues(settings)

    @pytest.mark.integration
    def test_run_names_a_partition_beyond_its_own(self, tmp_path):
        """A sender configured with more partitions declares queues no worker consumes: `run` says so at start, as an error."""
        tag = f"sm{os.getpid()}"
        settings = isolated_settings(tmp_path / "engine", broker_url=RABBIT, broker={"partitions": 4}, tag=tag)
        sender = isolated_settings(tmp_path / "sender", broker_url=RABBIT, broker={"partitions": 5}, tag=tag)
        try:
            _write_messages(tmp_path / "in", 1)
            assert _cli(sender, "send", str(tmp_path / "in")).returncode == 0  # declares p0..p4
            result = _cli(settings, "run", "--until-idle", "1", timeout=120)
            assert result.returncode == 0, result.stderr[-2000:]
            [event] = [e for e in _events(result.stderr) if e["event"] == "partition_not_consumed"]
            assert event["level"] == "error" and event["queue"] == f"{settings.engine.broker.names.inbound}.p4"
        finally:
            delete_queues(sender)

    @pytest.mark.integration
    def test_two_workers_settle_everything_and_exit_0(self, tmp_path):
        """`run --workers 2` on four partitions settles every message once and exits 0 when idle."""
        settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 4})
        try:
            fnrs = _write_messages(tmp_path / "in", 12)
            assert _cli(settings, "send", str(tmp_path / "in")).returncode == 0
            result = _cli(settings, "run", "--workers", "2", "--until-idle", "2", timeout=120)
            assert result.returncode == 0, result.stderr[-2000:]
            assert all(len(_patient(settings, f)) == 1 for f in fnrs)
            assert queue_depth(settings, settings.engine.broker.names.inbound) == 0
        finally:
            delete_queues(settings)


def _catches(pid: int, signum: int) -> bool:
    """True once process *pid* has a handler for *signum* (Linux: SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signum - 1)))


class TestSupervisor:
    @pytest.mark.integration
    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads SigCgt from /proc")
    def test_a_sigterm_while_the_workers_start_is_a_clean_stop(self, tmp_path):
        """Review H87: SIGTERM as soon as the supervisor's handlers are in, while its workers still start up. The
        workers it reaches before their own handlers are in die of the signal it passed on; that is the stop asked
        for, not a failure: exit 0 (README: SIGTERM stops `run` with exit 0), and no worker runs on."""
        settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 4})
        try:
            proc = subprocess.Popen([*HELSEBRO, "run", "--workers", "3"], env=_env(settings), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            wait_until(lambda: _catches(proc.pid, signal.SIGTERM) or proc.poll() is not None, 30, what="the supervisor's handlers")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err[-2000:]
        finally:
            delete_queues(settings)


def _children(pid: int) -> dict[int, str]:
    """The worker processes of supervisor *pid*: pid -> its --worker-index (Linux /proc)."""
    try:
        pids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return {}
    found = {}
    for child in pids:
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--worker-index" in argv:
            found[child] = argv[argv.index(b"--worker-index") + 1].decode()
    return found


class TestSupervisorRestarts:
    @pytest.mark.integration
    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
    def test_a_killed_worker_is_started_again(self, tmp_path):
        """Review H99: `kill -9` of one worker of `run --workers 2`. The supervisor did nothing: the other ran on alone
        for good. Now it logs the death and starts that worker again, and SIGTERM to the supervisor then stops both
        with exit 0. (Slow: each worker process takes seconds to start here.)"""
        settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 2}, workers={"restart_first_seconds": 0.1})
        proc = subprocess.Popen([*HELSEBRO, "run", "--workers", "2"], env=_env(settings), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            _two_workers_running(proc)
            [victim] = [p for p, i in _children(proc.pid).items() if i == "1"]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: any(i == "1" and p != victim and _catches(p, signal.SIGTERM) for p, i in _children(proc.pid).items()),
                       30, what="worker 1 restarted")
            workers = list(_children(proc.pid))
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err[-2000:]
            assert not any(Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text() for p in workers)
            events = _events(err)
            [died] = [e for e in events if e["event"] == "worker_died"]
            assert (died["worker"], died["exit_code"]) == (1, -9)
            assert [e["worker"] for e in events if e["event"] == "worker_restarted"] == [1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            delete_queues(settings)

    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
    @pytest.mark.integration
    def test_a_worker_that_keeps_dying_is_given_up(self, tmp_path):
        """A worker that dies at every start (here: exit 3 before it imports anything, as a broken install or an OOM
        at start would) is restarted with a growing backoff, then given up after 5 fast crashes: the supervisor stops the
        other worker and exits with the dead worker's code, so the service manager sees the failure, not a crash loop.
        The backoff starts at engine.yaml's workers.restart_first_seconds (1 s unless set; 0.1 here, so the test
        waits 1.5 s rather than 15 s) and doubles per crash."""
        settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 2}, workers={"restart_first_seconds": 0.1})
        env = _worker_1_exits(tmp_path, settings, 3)
        try:
            proc = subprocess.run([*HELSEBRO, "run", "--workers", "2"], env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 3, proc.stderr[-2000:]
            events = _events(proc.stderr)
            assert [(e["worker"], e["exit_code"]) for e in events if e["event"] == "worker_died"] == [(1, 3)] * 4
            assert [e["restart_in_s"] for e in events if e["event"] == "worker_died"] == [0.1, 0.2, 0.4, 0.8]
            assert [e["worker"] for e in events if e["event"] == "worker_restarted"] == [1] * 4
            [gave_up] = [e for e in events if e["event"] == "worker_given_up"]
            assert (gave_up["worker"], gave_up["exit_code"], gave_up["crashes"]) == (1, 3, 5)
        finally:
            delete_queues(settings)

    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
    @pytest.mark.integration
    def test_a_worker_that_exits_2_stops_the_run(self, tmp_path):
        """Review H153: a worker that exits 2 unasked (a ConfigError at its start: a mapping edited broken since the
        others started, so a restarted worker cannot start) was neither restarted nor said: the supervisor ran on a
        worker short for good, without a line, and only a later stop exited 2. Now it is given up at once: logged,
        the other worker stopped, and the run exits 2."""
        settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 2})
        env = _worker_1_exits(tmp_path, settings, 2)
        try:
            proc = subprocess.run([*HELSEBRO, "run", "--workers", "2"], env=env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 2, proc.stderr[-2000:]
            events = _events(proc.stderr)
            [gave_up] = [e for e in events if e["event"] == "worker_given_up"]
            assert (gave_up["worker"], gave_up["exit_code"]) == (1, 2)
            assert not [e for e in events if e["event"] == "worker_restarted"]
        finally:
            delete_queues(settings)

    @pytest.mark.integration
    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
    def test_a_sighup_stops_the_workers_with_the_supervisor(self, tmp_path):
        """Review H153: SIGHUP (the terminal or ssh session closed, or `kill -HUP` by an operator used to it reloading)
        killed the supervisor outright and left its workers running on, orphaned: never restarted, and out of reach of
        the SIGTERM a service manager then sends. Now it is a stop like SIGTERM: passed on, each worker finishes its
        batch, and the run exits 0 with no worker left."""
        with _two_worker_run(tmp_path) as (proc, workers):
            proc.send_signal(signal.SIGHUP)
            _, err = proc.communicate(timeout=60)
            wait_until(lambda: not _running(workers), 30, what="no worker left running")
            assert proc.returncode == 0, err[-2000:]
            assert [e["event"] for e in _events(err) if e["event"] == "engine_stopped"] == ["engine_stopped"] * 2

    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
    def test_a_sighup_stops_a_single_worker_cleanly(self, tmp_path):
        """Review H153: SIGHUP killed `helsebro run` mid-batch (exit -1); it now stops it as SIGTERM does, exit 0."""
        settings = isolated_settings(tmp_path)
        with subprocess.Popen([*HELSEBRO, "run"], env=_env(settings), stderr=subprocess.PIPE, text=True) as proc:
            try:
                wait_until(lambda: _catches(proc.pid, signal.SIGTERM) or proc.poll() is not None, 60, what="the worker's handlers")
                time.sleep(0.5)
                proc.send_signal(signal.SIGHUP)
                _, stderr = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert proc.returncode == 0, stderr[-2000:]
        assert _events(stderr)[-1]["event"] == "engine_stopped"


def _running(pids: list[int]) -> list[int]:
    """Those of *pids* still running (neither gone nor a zombie)."""
    alive = []
    for pid in pids:
        try:
            if "zombie" not in Path(f"/proc/{pid}/status").read_text():
                alive.append(pid)
        except OSError:
            pass
    return alive


def _kill_all(pids: list[int]) -> None:
    """SIGKILL this test's own leftover processes (orphans of a supervisor that died)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def _two_worker_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, list[int]]]:
    """A `run --workers 2` on RabbitMQ (2 partitions) with both workers up; afterwards none of its processes is left.

    Yields the supervisor (its stderr a pipe) and its workers' pids, for a test that stops it one way or another.
    """
    settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 2})
    proc = subprocess.Popen([*HELSEBRO, "run", "--workers", "2"], env=_env(settings), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        _two_workers_running(proc)
        workers.extend(_children(proc.pid))
        yield proc, workers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_all(workers)  # orphans of a supervisor that died: this test's own processes
        if proc.stderr is not None:
            proc.stderr.close()
        delete_queues(settings)


class TestSupervisorStops:
    @pytest.mark.integration
    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
    def test_workers_stop_when_the_supervisor_is_killed(self, tmp_path):
        """Review H169: `kill -9` of the supervisor left its workers consuming on, unsupervised, beside the
        workers of the next `run` the service manager starts. Now each notices its supervisor is gone and stops
        as on SIGTERM (the batch in hand finished and acked), logging `supervisor_gone`."""
        with _two_worker_run(tmp_path) as (proc, workers):
            proc.kill()
            _, err = proc.communicate(timeout=60)  # the workers hold its stderr: EOF once both have exited
            wait_until(lambda: not _running(workers), 30, what="no worker left running")
            events = _events(err)
            assert sorted(e["worker"] for e in events if e["event"] == "supervisor_gone") == [0, 1]
            assert [e["event"] for e in events if e["event"] == "engine_stopped"] == ["engine_stopped"] * 2

    @pytest.mark.integration
    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
    def test_a_worker_stuck_after_a_stop_is_killed_after_the_grace(self, tmp_path):
        """Review H169: after SIGTERM the supervisor waited for ever on a worker that did not stop. Now, after
        `--stop-grace`, it kills it (its unacked messages go back to the queue), logs `worker_killed` and exits 1;
        the worker that stopped in time is not killed."""
        settings = isolated_settings(tmp_path, broker_url=RABBIT, broker={"partitions": 2})
        stuck = tmp_path / "stuck"
        stuck.mkdir()
        (stuck / "sitecustomize.py").write_text(  # worker 1 ignores SIGTERM, as one hung in a call would
            "import signal, sys\n"
            "if sys.argv[-2:] == ['--worker-index', '1']:\n"
            "    _install = signal.signal\n"
            "    signal.signal = lambda s, h: _install(s, signal.SIG_IGN if s == signal.SIGTERM else h)\n")
        env = _env(settings)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(stuck), env.get("PYTHONPATH")) if p)
        log = tmp_path / "run.log"  # a file, not a pipe: read while the run goes on, to stop it once both consume
        with log.open("w") as stderr:
            proc = subprocess.Popen([*HELSEBRO, "run", "--workers", "2", "--stop-grace", "5"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=stderr)
        workers: list[int] = []
        try:
            wait_until(lambda: [e["event"] for e in _events(log.read_text())].count("engine_started") == 2 or proc.poll() is not None,
                       60, what="two workers consuming")
            workers = list(_children(proc.pid))
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            err = log.read_text()
            assert proc.returncode == 1, err[-2000:]
            assert len(workers) == 2 and not _running(workers)
            events = _events(err)
            [killed] = [e for e in events if e["event"] == "worker_killed"]
            assert (killed["worker"], killed["level"], killed["grace_s"]) == (1, "error", 5.0)
            assert [e["worker"] for e in events if e["event"] == "engine_stopped"] == [0]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _kill_all(workers)
            delete_queues(settings)


class TestSendNamesWhatAPathIs:
    """Review H191: `helsebro send` said "no such file or folder" for every PATH problem; it now says what it is, as
    `helsebro convert` does (exit 2 kept, nothing sent: the PATH is refused before the broker is opened)."""

    def test_a_fifo_is_named_as_such(self, capsys, tmp_path):
        from router.cli import main

        fifo = tmp_path / "pipe.hl7"
        os.mkfifo(fifo)
        assert main(["send", str(fifo)]) == 2
        err = capsys.readouterr().err
        assert f"helsebro send: not a regular file or folder: {fifo}" in err and "no such file" not in err, err

    def test_a_path_that_cannot_be_looked_at_says_so(self, capsys, tmp_path, monkeypatch):
        import errno

        from router.cli import main

        f = tmp_path / "m.hl7"
        f.write_bytes(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A08|X|P|2.5\r")
        real = Path.stat

        def stat(self, *args, **kwargs):  # root looks into any folder: chmod would not fail the test under it
            if self == f:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "stat", stat)
        assert main(["send", str(f)]) == 2
        err = capsys.readouterr().err
        assert "cannot read (Permission denied)" in err and "no such file" not in err, err

    def test_a_missing_path_is_still_named_missing(self, capsys, tmp_path):
        from router.cli import main

        assert main(["send", str(tmp_path / "nope.hl7")]) == 2
        assert f"helsebro send: no such file or folder: {tmp_path / 'nope.hl7'}" in capsys.readouterr().err
