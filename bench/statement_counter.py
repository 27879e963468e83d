"""Count the statements a process sends to PostgreSQL, from the wire: a counting TCP proxy.

pg_stat_statements would count them in the server, but only when it is in
shared_preload_libraries, which takes a restart; pg_stat_database counts transactions, not
statements, and reports them late. So the process under test connects through this proxy
(`with StatementCounter(dsn) as counter:` then use `counter.dsn`), which forwards every byte
both ways and reads the frontend's messages on the way: each simple Query ('Q') and each
extended-protocol Execute ('E') is one statement, BEGIN and COMMIT included (as
pg_stat_statements counts them). The text of each is kept too (Parse names the statement,
Bind picks it), so a report can say what an idle process keeps asking.

The proxy listens on 127.0.0.1 and forwards to the server's TCP port or, when the DSN's host is
a directory, its Unix socket (the tests' embedded pgserver has no TCP port). Connections must be
plain: its DSN sets sslmode=disable and gssencmode=disable (an encrypted stream could not be
read).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections import Counter
from types import TracebackType

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class _Frontend:
    """Reads one client's message stream: startup packet first, then typed messages."""

    def __init__(self, counter: StatementCounter) -> None:
        self.counter = counter
        self.buffer = bytearray()
        self.started = False
        self.statements: dict[bytes, str] = {}  # prepared statement name -> its text
        self.bound = ""  # text of the statement the last Bind picked

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if not self.started:
                if len(self.buffer) < 4:
                    return
                (length,) = struct.unpack("!i", self.buffer[:4])
                if len(self.buffer) < length:
                    return
                del self.buffer[:length]
                self.started = True
                continue
            if len(self.buffer) < 5:
                return
            kind = self.buffer[0:1]
            (length,) = struct.unpack("!i", self.buffer[1:5])
            if len(self.buffer) < 1 + length:
                return
            body = bytes(self.buffer[5 : 1 + length])
            del self.buffer[: 1 + length]
            self.message(kind, body)

    def message(self, kind: bytes, body: bytes) -> None:
        if kind == b"Q":
            self.counter.count(body.split(b"\0", 1)[0].decode(errors="replace"))
        elif kind == b"P":
            name, text = body.split(b"\0", 2)[:2]
            self.statements[name] = text.decode(errors="replace")
        elif kind == b"B":
            statement = body.split(b"\0", 2)[1]
            self.bound = self.statements.get(statement, "?")
        elif kind == b"E":
            self.counter.count(self.bound)


class StatementCounter:
    """A counting proxy in a thread of its own, for as long as the `with` block lasts."""

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        self.upstream = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
        self._params = params
        self.statements = 0
        self.texts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.dsn = ""

    def count(self, text: str) -> None:
        with self._lock:
            self.statements += 1
            code = (line for line in text.splitlines() if not line.lstrip().startswith("--"))
            self.texts[" ".join(" ".join(code).split())[:100]] += 1

    def snapshot(self) -> tuple[int, Counter[str]]:
        with self._lock:
            return self.statements, Counter(self.texts)

    def __enter__(self) -> StatementCounter:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        self.dsn = make_conninfo(
            **{**self._params, "host": "127.0.0.1", "port": str(port)},
            sslmode="disable",
            gssencmode="disable",
        )
        self._ready.set()
        self._loop.run_forever()
        # Close everything before the loop itself: the tests run with warnings as errors,
        # and a loop or socket left for the garbage collector is a ResourceWarning.
        server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            host, port = self.upstream
            if host.startswith("/"):  # a Unix-socket server (the embedded pgserver's)
                socket_path = f"{host}/.s.PGSQL.{port}"
                up_reader, up_writer = await asyncio.open_unix_connection(socket_path)
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        frontend = _Frontend(self)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, read: bool) -> None:
            try:
                with contextlib.suppress(OSError):
                    while data := await src.read(65536):
                        if read:
                            frontend.feed(data)
                        dst.write(data)
                        await dst.drain()
            finally:
                dst.close()

        with contextlib.suppress(asyncio.CancelledError):
            # Cancelled when the counter stops: end normally, since asyncio's stream server
            # logs an error for a client task that ends cancelled (Python 3.11).
            await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
