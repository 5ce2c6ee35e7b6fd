"""The embedded default's filesystem broker (backend/broker_transports.py) shared by several processes:
publishers and consumers in processes of their own, as the web, the worker and the dispatcher are.
Every message arrives whole and exactly once: a consumer never reads a file a publisher is still
writing (kombu's own transport creates the file, then writes it), and two consumers never both take
one."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from backend.broker_transports import UndecodableMessage, decode_envelope

PUBLISHERS, CONSUMERS, PER_PUBLISHER = 3, 3, 300
# A body big enough that writing it is not one instant.
PADDING = "x" * 64 * 1024


def _connection(folder: Path):
    from kombu import Connection

    return Connection(
        "filesystem://",
        transport="backend.broker_transports:AtomicFilesystemTransport",
        transport_options={
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "polling_interval": 0.01,
        },
    )


def _publish(folder: Path, publisher: int) -> None:
    with _connection(folder) as conn:
        queue = conn.SimpleQueue("q")
        for i in range(PER_PUBLISHER):
            queue.put({"id": f"{publisher}-{i}", "padding": PADDING})


def _consume(folder: Path, results, stop) -> None:
    from queue import Empty

    got = []
    with _connection(folder) as conn:
        queue = conn.SimpleQueue("q")
        while True:
            try:
                message = queue.get(timeout=0.2)
            except Empty:
                if stop.is_set():
                    break
                continue
            payload = message.payload
            got.append(payload["id"] if payload.get("padding") == PADDING else f"torn:{payload.get('id')}")
            message.ack()
    results.put(got)


@pytest.mark.slow
def test_several_processes_share_it_every_message_whole_and_once(tmp_path):
    for sub in ("queue", "processed", "control"):
        (tmp_path / sub).mkdir()
    ctx = multiprocessing.get_context("spawn")
    results, stop = ctx.Queue(), ctx.Event()
    consumers = [ctx.Process(target=_consume, args=(tmp_path, results, stop)) for _ in range(CONSUMERS)]
    publishers = [ctx.Process(target=_publish, args=(tmp_path, p)) for p in range(PUBLISHERS)]
    for proc in consumers + publishers:
        proc.start()
    for proc in publishers:
        proc.join(120)
        assert proc.exitcode == 0
    stop.set()
    received: list[str] = []
    for _ in consumers:
        received += results.get(timeout=120)  # a consumer that met a torn file raised: none comes
    for proc in consumers:
        proc.join(30)
        assert proc.exitcode == 0
    expected = {f"{p}-{i}" for p in range(PUBLISHERS) for i in range(PER_PUBLISHER)}
    assert sorted(received) == sorted(expected)  # whole, none twice, none lost


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b"[1]",
        b'{"properties": []}',
        b'{"properties": {}}',
        b'{"body": 3, "properties": {"delivery_tag": "t"}}',
        b'{"body": "%%%", "properties": {"delivery_tag": "t", "body_encoding": "base64"}}',
    ],
)
def test_an_envelope_kombu_did_not_write_is_refused(raw):
    with pytest.raises(UndecodableMessage):
        decode_envelope(raw)


def test_an_envelope_kombu_wrote_is_returned():
    raw = b'{"body": "e30=", "properties": {"delivery_tag": "t", "body_encoding": "base64"}}'
    assert decode_envelope(raw)["properties"]["delivery_tag"] == "t"
