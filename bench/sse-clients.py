#!/usr/bin/env python3
"""SSE clients for bench/sse-fanout.sh (standard library only): opens CLIENTS event streams to
URL at once, prints "connected N" once every one has had its first event, then counts the
events all of them receive for SECONDS seconds and prints "events TOTAL per_second RATE", and
exits (closing every stream)."""
import asyncio
import sys
import time
import urllib.parse


async def stream(url, first, counts, i):
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    target = parts.path + ("?" + parts.query if parts.query else "")
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    tail = b""
    seen = False
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError("stream ended")
        data = tail + chunk
        n = data.count(b"data: ")
        tail = data[-5:]
        if n and not seen:
            seen = True
            first.release()
            n -= 1
        counts[i] += n


async def main():
    url, clients, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    first = asyncio.Semaphore(0)
    counts = [0] * clients
    tasks = [asyncio.create_task(stream(url, first, counts, i)) for i in range(clients)]
    for _ in range(clients):
        waiting = asyncio.create_task(first.acquire())
        done, _ = await asyncio.wait([waiting, *[t for t in tasks if t.done()]], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            raise failed[0].exception()
        await waiting
    print(f"connected {clients}", flush=True)
    start, before = time.monotonic(), sum(counts)
    await asyncio.sleep(seconds)
    total = sum(counts) - before
    elapsed = time.monotonic() - start
    failed = sum(1 for t in tasks if t.done())
    print(f"events {total} per_second {total / elapsed:.1f} broken_streams {failed}", flush=True)
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
