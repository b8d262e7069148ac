"""Outgoing messages: task ids, and the settings a message reads."""

from __future__ import annotations

import os
import threading
import uuid

from fastq import App, protocol


def test_task_ids_are_random_uuid4s_never_repeated() -> None:
    ids = [protocol.new_task_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:600]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_threads_never_draw_the_same_id() -> None:
    drawn: list[list[str]] = [[] for _ in range(4)]

    def draw(into: list[str]) -> None:
        into.extend(protocol.new_task_id() for _ in range(3000))

    threads = [threading.Thread(target=draw, args=(d,)) for d in drawn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for d in drawn for i in d]
    assert len(set(everything)) == len(everything) == 12000


def test_a_forked_child_does_not_reuse_its_parents_ids() -> None:
    protocol.new_task_id()  # the parent now holds ids made ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, protocol.new_task_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child != protocol.new_task_id()


def test_a_setting_changed_between_sends_applies_to_the_next() -> None:
    app = App("t", broker="memory://", backend=None, set_as_current=False)
    first = app.build_message("t.add", (1, 2))
    assert (first.serializer, first.priority) == ("json", None)
    app.conf.task_serializer = "msgpack"
    app.conf.task_default_priority = 5
    app.conf.task_compression = "zlib"
    app.conf.task_ignore_result = True
    second = app.build_message("t.add", (1, 2))
    assert (second.serializer, second.priority) == ("msgpack", 5)
    assert second.headers["compression"] == "application/x-gzip"
    assert second.headers["ignore_result"] is True
    app.conf.task_inherit_parent_priority = True  # read from the running task: per message
    assert app.build_message("t.add", (1, 2)).priority == 5


def test_origin_names_the_process_after_a_fork() -> None:
    import os

    from fastq import protocol

    parent = protocol.origin()
    assert parent.startswith(f"gen{os.getpid()}@")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child says what it would send
        os.write(write, protocol.origin().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    os.close(write)
    assert child.startswith(f"gen{pid}@") and protocol.origin() == parent
