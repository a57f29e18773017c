"""A WebSocket backend built on the `websockets` library (asyncio), for tests.

    python tests/backends/ws_backend.py --port N [--mode MODE] [options]

Prints ``READY <port>`` once listening (port 0 picks a free one). Modes:
  echo        echoes every message with its type (default). On the path
              /info it first sends one JSON text message describing the
              handshake: {"path", "subprotocol", "extensions" (the
              Sec-WebSocket-Extensions it answered), "headers" (request
              header lines, in order)}. A text message "ping:X" makes it
              send a ping with payload X and, once the pong is back, the
              text "pong:X".
  hold        completes the handshake, then stays silent (reads nothing)
  close-after echoes --count messages, then closes with 1000 "done"
  tick        sends --count text messages "tick I", one every --interval
              seconds, reading nothing, then closes with 1000 "ticked"
  refuse      answers every handshake with --status (default 403), as HTTP

A request without "Upgrade: websocket" (a health probe) gets 200 "ok".

Options: --subprotocols a,b (what the server supports; it picks the first of
them that the client offers), --compression deflate|none, --tls CERT KEY.

Every session end is written to stderr as one line:
``CLOSED path=P rcvd=CODE reason=R`` (rcvd: the close frame received from the
peer, "none" if the connection ended without one).
"""
import argparse
import asyncio
import json
import ssl
import sys
from http import HTTPStatus

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


def log(line):
    print(line, file=sys.stderr, flush=True)


async def echo(ws):
    async for message in ws:
        if isinstance(message, str) and message.startswith("ping:"):
            payload = message[5:].encode()
            waiter = await ws.ping(payload)
            await asyncio.wait_for(waiter, 10)
            await ws.send("pong:" + payload.decode())
            continue
        await ws.send(message)


def describe(ws):
    return json.dumps({
        "path": ws.request.path,
        "subprotocol": ws.subprotocol,
        "extensions": ws.response.headers.get("Sec-WebSocket-Extensions"),
        "headers": [[name, value] for name, value in ws.request.headers.raw_items()],
    })


def make_handler(args):
    async def handler(ws):
        try:
            if args.mode == "hold":
                await ws.wait_closed()
            elif args.mode == "close-after":
                for _ in range(args.count):
                    await ws.send(await ws.recv())
                await ws.close(1000, "done")
            elif args.mode == "tick":
                for i in range(args.count):
                    await asyncio.sleep(args.interval)
                    await ws.send(f"tick {i}")
                await ws.close(1000, "ticked")
            else:
                if ws.request.path.split("?")[0] == "/info":
                    await ws.send(describe(ws))
                await echo(ws)
        except ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            log(f"CLOSED path={ws.request.path} rcvd={rcvd.code if rcvd else 'none'} "
                f"reason={rcvd.reason if rcvd else ''}")
    return handler


def make_process_request(args):
    def process_request(connection, request):
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return connection.respond(HTTPStatus.OK, "ok\n")  # health probes
        if args.mode == "refuse":
            return connection.respond(HTTPStatus(args.status), f"refused {args.status}\n")
        return None
    return process_request


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--mode", default="echo",
                        choices=["echo", "hold", "close-after", "tick", "refuse"])
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--status", type=int, default=403)
    parser.add_argument("--subprotocols", default="")
    parser.add_argument("--compression", default="none", choices=["deflate", "none"])
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*args.tls)
    async with serve(make_handler(args), args.host, args.port, ssl=context,
                     subprotocols=[s for s in args.subprotocols.split(",") if s] or None,
                     compression="deflate" if args.compression == "deflate" else None,
                     process_request=make_process_request(args),
                     ping_interval=None, max_size=None, server_header=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
