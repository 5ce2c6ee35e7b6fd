"""Wake-up latency (publish -> a consumer holds it) and publish cost, through kombu with the transport
options cxrq ships: Redis, RabbitMQ quorum queue + publisher confirms (cxrq's), and RabbitMQ classic
without confirms for scale (docs/scaling.md, "Broker choice").

    python -m tools.broker_bench [--messages 500] [--redis redis://127.0.0.1:6379/9]

RabbitMQ: a private vhost on the local server (rabbitmqctl), deleted afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

from kombu import Connection, Exchange, Queue

from tests.reliability.harness import RabbitVhost

# The options backend/settings/base.py gives each transport.
REDIS_OPTS = {"visibility_timeout": 3600, "socket_connect_timeout": 1, "socket_timeout": 5, "max_retries": 1}
AMQP_OPTS = {
    "connect_timeout": 1,
    "read_timeout": 2,
    "write_timeout": 2,
    "max_retries": 0,
    "confirm_publish": True,
}
WARM_UP = 20


def run(label: str, url: str, opts: dict, queue_args: dict | None, exchange_type: str, n: int) -> None:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    exchange = Exchange(name, exchange_type, durable=True)
    queue = Queue(name, exchange, routing_key=name, queue_arguments=queue_args, durable=True)
    latency, publish = [], []
    got = threading.Event()
    stamp: dict[str, float] = {}

    def on_message(_body, message) -> None:
        stamp["t"] = time.perf_counter()
        message.ack()
        got.set()

    with (
        Connection(url, transport_options=opts) as consumer_conn,
        Connection(url, transport_options=opts) as pub_conn,
    ):
        queue(consumer_conn.default_channel).declare()
        producer = pub_conn.Producer(serializer="json")
        with consumer_conn.Consumer(queue, callbacks=[on_message], prefetch_count=1):
            for i in range(n + WARM_UP):
                got.clear()
                t0 = time.perf_counter()
                producer.publish(
                    {"job_ids": [str(uuid.uuid4())]},
                    exchange=exchange,
                    routing_key=name,
                    declare=[queue] if i == 0 else None,
                    retry=False,
                )
                t1 = time.perf_counter()
                while not got.is_set():
                    consumer_conn.drain_events(timeout=5)
                if i >= WARM_UP:
                    publish.append((t1 - t0) * 1000)
                    latency.append((stamp["t"] - t0) * 1000)
        queue(consumer_conn.default_channel).delete()

    def pct(xs: list[float], k: int) -> float:
        return statistics.quantiles(xs, n=100)[k - 1]

    print(
        f"{label:36s} publish p50 {pct(publish, 50):6.2f} ms p99 {pct(publish, 99):6.2f} | "
        f"wake-up p50 {pct(latency, 50):6.2f} ms p99 {pct(latency, 99):6.2f} ms  (n={n})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()
    run("redis (cxrq options)", args.redis, REDIS_OPTS, None, "direct", args.messages)
    vhost = RabbitVhost()
    vhost.create()
    try:
        run(
            "rabbitmq quorum + confirms (cxrq)",
            vhost.url(),
            AMQP_OPTS,
            {"x-queue-type": "quorum"},
            "topic",
            args.messages,
        )
        run(
            "rabbitmq classic, no confirms",
            vhost.url(),
            {"connect_timeout": 1},
            None,
            "direct",
            args.messages,
        )
    finally:
        vhost.delete()


if __name__ == "__main__":
    main()
