"""The event bus benchmark's Python reference: pika against the same RabbitMQ with the
same guarantees and settings as `events_bench` (crates/kit/examples): a quorum queue,
persistent 1 KiB messages, one publisher waiting for each publisher confirm, one
consumer with prefetch 100 and manual acks, a handler that does nothing.

    python events_pika.py AMQP_URL EVENTS LIVE   -> one JSON line
"""

import json
import sys
import time
import uuid

import pika

PAYLOAD_BYTES = 1024
PREFETCH = 100


def now_us():
    return time.time_ns() // 1000


def body():
    return json.dumps({"sent_us": now_us(), "filler": "x" * PAYLOAD_BYTES}).encode()


def main():
    url, events, live = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    queue = "agora-bench-pika-" + uuid.uuid4().hex
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")

    def publish():
        # With confirms on, basic_publish returns once the broker has confirmed (or raises).
        channel.basic_publish(exchange="", routing_key=queue, body=body(), properties=properties)

    start = time.monotonic()
    for _ in range(events):
        publish()
    published = time.monotonic() - start

    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=PREFETCH)
    state = {"handled": 0, "measuring": False, "latencies": []}

    def handle(ch, method, _properties, data):
        sent = json.loads(data)["sent_us"]
        ch.basic_ack(delivery_tag=method.delivery_tag)
        state["handled"] += 1
        if state["measuring"]:
            state["latencies"].append(now_us() - sent)

    def wait_until(handled):
        while state["handled"] < handled:
            connection.process_data_events(time_limit=1)

    consumer.basic_consume(queue=queue, on_message_callback=handle)
    start = time.monotonic()
    wait_until(events)
    drained = time.monotonic() - start

    state["measuring"] = True
    for n in range(live):
        publish()
        wait_until(events + n + 1)
    channel.queue_delete(queue=queue)
    connection.close()

    latencies = sorted(state["latencies"])

    def at(q):
        return latencies[round((len(latencies) - 1) * q)] / 1000.0 if latencies else 0.0

    print(json.dumps({
        "mode": "pika",
        "events": events,
        "payload_bytes": PAYLOAD_BYTES,
        "prefetch": PREFETCH,
        "publish_per_s": round(events / published),
        "consume_per_s": round(events / drained),
        "latency_p50_ms": at(0.50),
        "latency_p99_ms": at(0.99),
        "latency_samples": len(latencies),
    }))


if __name__ == "__main__":
    main()
