#!/usr/bin/env python3
"""The origin of the stream benchmarks: an HTTP/1.1 server (standard library only) whose bodies
are generated as they are sent, nothing read from disk.

  GET /joke/events?every=1.0   text/event-stream: one event every `every` seconds, forever
  GET /joke/bytes?size=N       N bytes (Content-Length), written in 4 MiB pieces of one buffer
  GET /joke, /readyz, /healthz a small 200 (for nginx's and the gateway's readiness checks)

It serves under `/joke` so that the standard gateway routes to it as an instance of `jokes`
(named in the gateway's `PEERS`, or registered with `--registry URL`): no test route table is
needed in a release binary.
Every response closes its connection. Prints "listening PORT" once it accepts connections.
"""
import argparse
import asyncio
import json
import urllib.parse
import urllib.request

PIECE = b"x" * (4 << 20)


async def handle(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    target = head.split(b" ", 2)[1].decode()
    url = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(url.query))
    try:
        if url.path == "/joke/events":
            await events(writer, float(query.get("every", "1")))
        elif url.path == "/joke/bytes":
            await body(writer, int(query.get("size", str(1 << 30))))
        else:
            small = b'{"joke":"ok"}\n'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(small), small))
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def events(writer, every):
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                 b"connection: close\r\n\r\n")
    n = 0
    while True:
        writer.write(b"data: event %d\n\n" % n)
        await writer.drain()
        n += 1
        await asyncio.sleep(every)


async def body(writer, size):
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                 b"content-length: %d\r\nconnection: close\r\n\r\n" % size)
    left = size
    view = memoryview(PIECE)
    while left > 0:
        n = min(left, len(PIECE))
        writer.write(view[:n])
        await writer.drain()
        left -= n


def register(registry, port):
    request = urllib.request.Request(
        registry.rstrip("/") + "/v1/instances",
        data=json.dumps({"service": "jokes", "address": f"127.0.0.1:{port}", "protocol": "http",
                         "ttl_secs": 300}).encode(),
        headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201, response.status


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--registry")
    args = parser.parse_args()
    server = await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    if args.registry:
        register(args.registry, port)
    print(f"listening {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
