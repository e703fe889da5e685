"""A TCP load balancer for the bench: stands in for the PgBouncer Service (kube-proxy).

Every accepted connection goes to the next backend in turn (round robin), and stays there, as a
Service spreads TCP connections over its pods. So the pooled connections of one app pod land on
every PgBouncer, and one busy pod can use every replica's server pool.

    python bench/tcplb.py LISTEN_PORT BACKEND_PORT [BACKEND_PORT...]     (all on 127.0.0.1)

Runs until SIGTERM/SIGINT. Standard library only.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys

HOST = "127.0.0.1"
CHUNK = 65536


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, OSError):
            pass


async def serve(listen_port: int, backends: list[int]) -> None:
    turn = itertools.cycle(backends)

    async def handle(client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        port = next(turn)
        try:
            server_reader, server_writer = await asyncio.open_connection(HOST, port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, server_writer),
                             pump(server_reader, client_writer))

    server = await asyncio.start_server(handle, HOST, listen_port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"tcplb: 127.0.0.1:{listen_port} -> {backends}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not all(a.isdigit() for a in argv):
        sys.stderr.write("usage: tcplb.py LISTEN_PORT BACKEND_PORT [BACKEND_PORT...]\n")
        return 2
    asyncio.run(serve(int(argv[0]), [int(a) for a in argv[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
