"""The HTTP/1.1 protocol `nuages serve` gives uvicorn: httptools' parser, little Python.

uvicorn still runs the server: sockets, workers, lifespan, signals and graceful shutdown.
What it hands each connection is this protocol, in place of its own httptools one. Its
own costs about 100,000 CPU instructions per request on this machine's Python, a fifth of
a record ``GET``: per request an ``asyncio.Event``, a timer armed and cancelled for the
keep-alive timeout, two regular expressions run on each response header, ASGI messages
checked and rebuilt. This one does the same HTTP with less:

- **One write per response.** The status line and headers wait for the first body part
  and leave with it (or at the end of the event-loop iteration, when the application
  streams a body it has not started yet): one system call, one TCP segment for a small
  JSON answer.
- **Keep-alive timeout** (``timeout_keep_alive``, uvicorn's setting): an idle connection
  is closed once it has been idle that long. One timer per connection, re-armed when it
  fires early, instead of one per request.
- **Slow clients** (:attr:`HttpProtocol.request_timeout`, 20 s): a request's head must
  arrive whole within that time of its first byte, else a 408 and the connection closed;
  a body that stops arriving for that long (while the server is reading it) closes the
  connection. A client sending a byte now and then cannot hold a connection and a task
  for ever. The clock stops while the server does not read (a paused read, an
  ``Expect: 100-continue`` not answered yet).
- **Header checks** in one pass over the whole head: a header name or value holding a
  line break or a NUL would split the response; such a response is refused (a 500 and
  the connection closed).
- **Request bodies** are buffered up to 64 KiB, then reading pauses until the application
  takes them (``receive``); ``Expect: 100-continue`` is answered at the first
  ``receive``. A response without ``Content-Length`` is sent chunked (HTTP/1.1) or
  until the connection closes (HTTP/1.0).
- **Pipelined requests** are answered in order: the next one starts when the response
  before it is complete; reading pauses meanwhile.
- **Flow control:** when the socket's write buffer is full, ``send`` waits for it to
  drain.
- **Errors:** an unparsable request gets a 400 and the connection is closed; an
  application that fails before its response starts gives a 500, after it a closed
  connection.
- **WebSocket upgrades** are handed, with the connection, to uvicorn's WebSocket protocol
  when it has one; another upgrade is answered as a plain HTTP request, then the
  connection is closed.
- uvicorn's ``limit_concurrency`` (a 503 above it), ``limit_max_requests``,
  ``root_path``, default headers (``Date``) and graceful shutdown keep their meaning.
  Its access log does not exist here: Nuages writes its own (``nuages.web.accesslog``).
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from collections import deque
from typing import Any
from urllib.parse import unquote

import httptools

log = logging.getLogger(__name__)

# Buffered request body above which reading pauses until the application takes it.
HIGH_WATER = 65536


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")


_STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
_NO_BODY_STATUSES = frozenset((204, 304))
# Lengths of the header names that frame a response: connection, content-length,
# transfer-encoding.
_FRAMING_LENGTHS = frozenset((10, 14, 17))
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _plain(status: int, text: str, headers: Any) -> bytes:
    """A whole response of `status` with a plain-text body, closing the connection;
    `headers`: the server's default ones (``Date``)."""
    body = text.encode("ascii")
    return b"".join(
        [
            _STATUS_LINES[status],
            *(b"%s: %s\r\n" % header for header in headers),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            body,
        ]
    )


class _Exchange:
    """One request and its response, on one connection; its ``receive`` and ``send`` are
    the ASGI callables the application is given."""

    __slots__ = (
        "body",
        "chunked",
        "complete",
        "continue_expected",
        "disconnected",
        "done",
        "given",
        "head",
        "head_only",
        "keep_alive",
        "protocol",
        "remaining",
        "scope",
        "started",
        "waiter",
    )

    def __init__(
        self,
        protocol: HttpProtocol,
        scope: dict[str, Any],
        keep_alive: bool,
        continue_expected: bool,
    ) -> None:
        self.protocol = protocol
        self.scope = scope
        self.keep_alive = keep_alive
        self.continue_expected = continue_expected
        self.head_only = scope["method"] == "HEAD"  # (or a status without a body)
        # Request
        self.body = bytearray()
        self.complete = False  # its whole body was parsed
        self.given = False  # and given to the application
        self.waiter: asyncio.Future[None] | None = None  # a receive() waiting for more
        self.disconnected = False
        # Response
        self.started = False
        self.head: bytes | None = None  # status line and headers, not written yet
        self.chunked = False
        self.remaining: int | None = None  # bytes of body still to send, if announced
        self.done = False

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- ASGI ------------------------------------------------------------------------
    async def receive(self) -> dict[str, Any]:
        protocol = self.protocol
        if self.continue_expected and not self.started and not self.disconnected:
            self.continue_expected = False
            protocol.transport.write(_CONTINUE)
            protocol.waiting_for_client()  # the body's clock starts now
        while not (self.disconnected or self.done):
            if self.body or (self.complete and not self.given):
                body = bytes(self.body)
                self.body.clear()
                self.given = self.complete
                if protocol.reading_paused and not protocol.queue:
                    protocol.resume_reading()
                return {"type": "http.request", "body": body, "more_body": not self.complete}
            # Its body is still coming, or it was all given: wait (for the end).
            self.waiter = protocol.loop.create_future()
            await self.waiter
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        protocol = self.protocol
        if protocol.write_paused and not self.disconnected:
            await protocol.drained()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {kind!r}")
            self._start(message["status"], message.get("headers", ()))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"expected http.response.body, got {kind!r}")
        if self.done:
            raise RuntimeError("the response is already complete")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        parts = [] if self.head is None else [self.head]
        self.head = None
        if self.head_only:
            pass
        elif self.chunked:
            if body:
                parts += [b"%x\r\n" % len(body), body, b"\r\n"]
            if not more:
                parts.append(b"0\r\n\r\n")
        elif self.remaining is not None:
            self.remaining -= len(body)
            if self.remaining < 0:
                raise RuntimeError("response body longer than its Content-Length")
            parts.append(body)
        else:
            parts.append(body)  # HTTP/1.0 without a length: ends with the connection
        if parts:
            protocol.transport.write(parts[0] if len(parts) == 1 else b"".join(parts))
        if not more:
            if self.remaining and not self.head_only:
                raise RuntimeError("response body shorter than its Content-Length")
            self.done = True
            protocol.finished(self)

    def _start(self, status: int, headers: Any) -> None:
        parts = [_STATUS_LINES.get(status) or _status_line(status)]
        for name, value in self.protocol.state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        close = False
        length: int | None = None
        chunked = False
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
            if len(name) in _FRAMING_LENGTHS:
                lowered = name.lower()
                if lowered == b"content-length":
                    length = int(value)
                elif lowered == b"transfer-encoding":
                    chunked = value.strip().lower() == b"chunked"
                elif lowered == b"connection":
                    close = b"close" in value.lower()
        if close:
            self.keep_alive = False
        if status in _NO_BODY_STATUSES or status < 200:
            self.head_only = True  # whatever body the application gives is not sent
        if self.head_only:
            pass
        elif length is not None:
            self.remaining = length
        elif chunked:
            self.chunked = True
        elif self.scope["http_version"] == "1.1":
            self.chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            self.keep_alive = False  # the body ends with the connection
        if not self.keep_alive and not close:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        # One line per header (4 parts each) and per other part: as many line breaks, as
        # many carriage returns, and no NUL, else a name or a value holds one and would
        # split the response (header injection).
        others = 2 + (len(parts) - 2) % 4  # the status line, the end, those added above
        lines = (len(parts) - others) // 4 + others
        if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\x00" in head:
            raise RuntimeError("invalid HTTP header name or value")
        self.started = True
        self.continue_expected = False
        if length is None and not self.head_only:
            self.protocol.transport.write(head)  # a stream: its head leaves at once
        else:
            self.head = head  # leaves with the body, in one write


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 on one connection, for ``uvicorn.Config(http=HttpProtocol)`` (module docs)."""

    # Seconds a request's head may take from its first byte, and a body may stop arriving.
    request_timeout: float = 20.0

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.state = server_state
        self.app_state = app_state
        self.root_path: str = config.root_path
        self.keep_alive_timeout: float = config.timeout_keep_alive
        self.limit_concurrency: int | None = config.limit_concurrency
        self.asgi = {"version": config.asgi_version, "spec_version": "2.3"}
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        # The exchange being answered, and the pipelined ones waiting behind it.
        self.current: _Exchange | None = None
        self.queue: deque[_Exchange] = deque()
        self.parsing: _Exchange | None = None  # the exchange whose body is being parsed
        self.closing = False  # shut down: close once the current response is sent
        self.reading_paused = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        # Keep-alive: since when the connection has been idle (None: it is not), and the
        # timer that checks it and the request timeout.
        self.idle_since: float | None = None
        # Request timeout: since when the message being parsed began, or its body last
        # arrived (None: no message is partly read).
        self.partial_since: float | None = None
        self.head_pending = False  # its head is not whole yet
        self.timer: asyncio.TimerHandle | None = None
        # The request being parsed.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.upgrade_to: Any = None  # a WebSocket protocol taking the connection over

    # -- connection ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport  # (uvloop's transports are not asyncio.Transport's)
        self.state.connections.add(self)
        server = transport.get_extra_info("sockname")
        client = transport.get_extra_info("peername")
        self.server = (server[0], server[1]) if isinstance(server, tuple) else None
        self.client = (client[0], client[1]) if isinstance(client, tuple) else None
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        for exchange in (self.current, *self.queue):
            if exchange is not None and not exchange.done:
                exchange.disconnected = True
                exchange._wake()
        self.queue.clear()
        self.resume_writing()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.parser = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.upgrade_to is not None:
                self._hand_over(data[upgrade.args[0] :] if upgrade.args else b"")
            elif self.current is not None:
                # Answered as plain HTTP; what follows is not HTTP: close after it.
                self.current.keep_alive = False
                self.pause_reading()
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if cause is not None and not isinstance(cause, httptools.HttpParserError):
                log.error("HTTP parser callback failed", exc_info=cause)  # a bug of ours
            self._refuse(400, "Invalid HTTP request received.")
            return
        if self.partial_since is not None:  # a message partly read: its clock runs
            self._check_by(self.partial_since + self.request_timeout)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now if idle, else after the response."""
        self.closing = True
        if self.current is None:
            self.transport.close()
        else:
            self.current.keep_alive = False

    def _refuse(self, status: int, text: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(_plain(status, text, self.state.default_headers))
            self.transport.close()

    # -- flow control ----------------------------------------------------------------
    def pause_reading(self) -> None:
        if not self.reading_paused and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.transport.is_closing():
            self.reading_paused = False
            self.transport.resume_reading()
            self.waiting_for_client()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drained(self) -> None:
        if self._drain is None:
            self._drain = self.loop.create_future()
        await self._drain

    # -- keep-alive and request timeouts ----------------------------------------------
    def _idle(self) -> None:
        self.idle_since = self.loop.time()
        if self.timer is None:
            self._arm(self.keep_alive_timeout)

    def waiting_for_client(self) -> None:
        """The client was waiting for the server (a paused read, a 100 Continue): the
        request timeout of a message partly read starts again."""
        if self.partial_since is not None:
            self.partial_since = now = self.loop.time()
            self._check_by(now + self.request_timeout)

    def _arm(self, delay: float) -> None:
        self.timer = self.loop.call_later(delay, self._check_timeouts)

    def _check_by(self, deadline: float) -> None:
        """Have the timer fire by `deadline` (loop time) at the latest."""
        timer = self.timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self.timer = self.loop.call_at(deadline, self._check_timeouts)

    def _check_timeouts(self) -> None:
        """The connection's timer: the request timeout of a message partly read, else the
        keep-alive timeout of an idle connection."""
        self.timer = None
        since = self.partial_since
        if since is not None:
            parsing = self.parsing
            if self.reading_paused or (parsing is not None and parsing.continue_expected):
                return  # the client waits for us: re-armed when reading resumes
            left = since + self.request_timeout - self.loop.time()
            if left > 0:
                self._arm(left)
            elif self.head_pending:
                self._refuse(408, "Request Timeout")
            else:
                self.transport.close()  # its body stopped: the application is told
            return
        if self.idle_since is None or self.current is not None:
            return  # busy: re-armed when idle again
        left = self.idle_since + self.keep_alive_timeout - self.loop.time()
        if left <= 0:
            self.transport.close()
        else:
            self._arm(left)

    # -- parser callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.partial_since = self.loop.time()
        self.head_pending = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.head_pending = False
        parser = self.parser
        version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        headers = self.headers
        if parser.should_upgrade() and self._websocket_upgrade(headers):
            return
        url = httptools.parse_url(self.url)  # (a 400 when invalid: data_received)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        root = self.root_path
        scope = {
            "type": "http",
            "asgi": self.asgi,
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": root,
            "path": root + path if root else path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": url.query or b"",
            "headers": headers,
            "state": self.app_state.copy(),
            # When the request was read (errors.Attempt.since): before any statement sent
            # for the requests read after it.
            "nuages.arrived": time.monotonic_ns(),
        }
        continue_expected = False
        if version == "1.1":
            for name, value in headers:
                if name == b"expect" and value.lower() == b"100-continue":
                    continue_expected = True
        keep_alive = version != "1.0" and parser.should_keep_alive() and not self.closing
        exchange = _Exchange(self, scope, keep_alive, continue_expected)
        self.parsing = exchange
        if self.current is None:
            self._start(exchange)
        else:
            self.queue.append(exchange)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        self.partial_since = self.loop.time()
        exchange = self.parsing
        if exchange is None or exchange.done:
            return
        exchange.body += body
        if len(exchange.body) > HIGH_WATER:
            self.pause_reading()
        exchange._wake()

    def on_message_complete(self) -> None:
        self.partial_since = None
        exchange = self.parsing
        if exchange is None:
            return
        self.parsing = None
        exchange.complete = True
        if exchange.waiter is not None:
            exchange._wake()

    # -- exchanges -------------------------------------------------------------------
    def _start(self, exchange: _Exchange) -> None:
        self.current = exchange
        self.idle_since = None
        state = self.state
        limit = self.limit_concurrency
        if limit is not None and (len(state.connections) >= limit or len(state.tasks) >= limit):
            log.warning("Exceeded concurrency limit.")
            coroutine = self._run(exchange, _service_unavailable)
        else:
            coroutine = self._run(exchange, self.app)
        # Known to uvicorn's graceful shutdown, which waits for them (`_run` drops it).
        state.tasks.add(self.loop.create_task(coroutine))

    async def _run(self, exchange: _Exchange, app: Any) -> None:
        try:
            await app(exchange.scope, exchange.receive, exchange.send)
        except BaseException as exc:  # a cancelled task too (a forced shutdown)
            if isinstance(exc, Exception):
                log.error("Exception in ASGI application", exc_info=exc)
            if not exchange.started and not exchange.disconnected:
                self._refuse(500, "Internal Server Error")
            else:
                self.transport.close()
            return
        finally:
            self.state.tasks.discard(asyncio.current_task())
        if exchange.done or exchange.disconnected:
            return
        if not exchange.started:
            log.error("ASGI application returned without starting a response")
            self._refuse(500, "Internal Server Error")
        else:
            log.error("ASGI application returned without completing its response")
            self.transport.close()

    def finished(self, exchange: _Exchange) -> None:
        """`exchange`'s response is sent: start the next request, or wait for one."""
        self.state.total_requests += 1
        if exchange.waiter is not None:
            exchange._wake()  # a receive() waiting for the end of the exchange
        if self.parsing is exchange:
            self.parsing = None  # the rest of its body is parsed and dropped
        self.current = None
        if not exchange.keep_alive:
            self.transport.close()
            return
        if self.transport.is_closing():
            return
        if self.queue:
            self._start(self.queue.popleft())
            if not self.queue:
                self.resume_reading()
            return
        if self.reading_paused:
            self.resume_reading()
        self.idle_since = self.loop.time()
        if self.timer is None:
            self._idle()

    # -- WebSocket -------------------------------------------------------------------
    def _websocket_upgrade(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether the request asks for a WebSocket that uvicorn can serve: if so, the
        connection is handed over once the parser has seen the whole head."""
        protocol_class = self.config.ws_protocol_class
        if protocol_class is None:
            return False
        upgrade = connection = b""
        for name, value in headers:
            if name == b"upgrade":
                upgrade = value.lower()
            elif name == b"connection":
                connection = value.lower()
        if upgrade != b"websocket" or b"upgrade" not in connection:
            return False
        self.upgrade_to = protocol_class
        return True

    def _hand_over(self, rest: bytes) -> None:
        method = self.parser.get_method()
        head = [method, b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        self.state.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        protocol = self.upgrade_to(
            config=self.config, server_state=self.state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        protocol.data_received(b"".join(head) + rest)
        self.transport.set_protocol(protocol)


async def _service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    body = b"Service Unavailable"
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
