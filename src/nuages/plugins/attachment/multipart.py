"""An incremental ``multipart/form-data`` parser (RFC 7578), fed the body chunk by chunk.

Uploads are never held whole in memory: :meth:`MultipartParser.feed` turns each chunk into
events — a part starts (its headers), some of its bytes, it ends — and keeps only what may be
the beginning of the next boundary. Malformed input raises :class:`MultipartError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Final

MAX_HEADER_BYTES: Final = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart."""


@dataclass(frozen=True, slots=True)
class PartStart:
    name: str | None
    filename: str | None
    content_type: str


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type header."""
    message = EmailMessage()
    try:
        message["content-type"] = content_type
        boundary = message.get_boundary()
    except (ValueError, TypeError, LookupError, IndexError):
        boundary = None
    if message.get_content_type() != "multipart/form-data":
        raise MultipartError("Content-Type should be multipart/form-data")
    if not boundary or len(boundary) > 200 or not boundary.isascii():
        raise MultipartError("Invalid multipart boundary")
    return boundary.encode("ascii")


def _part_start(block: bytes) -> PartStart:
    try:
        headers = BytesParser(policy=HTTP).parsebytes(block + b"\r\n\r\n", headersonly=True)
        name = headers.get_param("name", header="content-disposition")
        filename = headers.get_filename()
        content_type = headers.get_content_type()
    except (ValueError, TypeError, LookupError, IndexError) as exc:
        raise MultipartError(f"Invalid part headers: {exc}") from None
    return PartStart(
        name if isinstance(name, str) else None,
        filename if isinstance(filename, str) else None,
        content_type,
    )


class MultipartParser:
    """Push parser: :meth:`feed` chunks, then :meth:`close`."""

    def __init__(self, boundary: bytes) -> None:
        self.delimiter = b"\r\n--" + boundary
        # A leading CRLF lets the first boundary (no CRLF before it) match the delimiter.
        self.buffer = bytearray(b"\r\n")
        self.state = "preamble"

    def feed(self, data: bytes) -> list[Event]:
        self.buffer += data
        events: list[Event] = []
        buf, delimiter = self.buffer, self.delimiter
        while True:
            if self.state == "preamble":
                index = buf.find(delimiter)
                if index < 0:
                    del buf[: max(0, len(buf) - len(delimiter) + 1)]
                    return events
                del buf[: index + len(delimiter)]
                self.state = "boundary"
            elif self.state == "boundary":
                if len(buf) < 2:
                    return events
                if buf[:2] == b"--":
                    self.state = "end"
                    continue
                index = buf.find(b"\r\n")
                if index < 0:
                    if len(buf) > 1024:
                        raise MultipartError("Invalid multipart boundary line")
                    return events
                if bytes(buf[:index]).strip(b" \t"):
                    raise MultipartError("Invalid multipart boundary line")
                del buf[: index + 2]
                self.state = "headers"
            elif self.state == "headers":
                if buf[:2] == b"\r\n":
                    block, size = b"", 2
                else:
                    index = buf.find(b"\r\n\r\n")
                    if index < 0:
                        if len(buf) > MAX_HEADER_BYTES:
                            raise MultipartError("Part headers too long")
                        return events
                    block, size = bytes(buf[:index]), index + 4
                if size > MAX_HEADER_BYTES:
                    raise MultipartError("Part headers too long")
                del buf[:size]
                events.append(_part_start(block))
                self.state = "body"
            elif self.state == "body":
                index = buf.find(delimiter)
                if index < 0:
                    safe = len(buf) - len(delimiter) + 1
                    if safe > 0:
                        events.append(PartData(bytes(buf[:safe])))
                        del buf[:safe]
                    return events
                if index:
                    events.append(PartData(bytes(buf[:index])))
                events.append(PartEnd())
                del buf[: index + len(delimiter)]
                self.state = "boundary"
            else:  # end: the epilogue is ignored
                buf.clear()
                return events

    def close(self) -> None:
        """Check that the closing boundary was seen."""
        if self.state != "end":
            raise MultipartError("Truncated multipart body")


__all__ = [
    "Event",
    "MultipartError",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "boundary_of",
]
