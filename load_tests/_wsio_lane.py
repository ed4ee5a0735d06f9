"""The former framing fast lane of ``service.wsio`` (removed; see docs/performance.md, "WebSocket layer").

Kept only as the baseline of the WebSocket-layer benchmark (``load_tests/ws_variants.py``
``wsio-lane``, ``load_tests/bench_media_floor.py --ws wsio-lane``): a second RFC 6455 frame parser
that unmasked whole unfragmented data frames itself and handed everything else to ``websockets``,
and a hand-framed ``send_nowait``. ``install()`` patches it into ``service.wsio.SansIOWebSocket``
of the benchmark process. Never imported by the service.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Final

from websockets.frames import apply_mask
from websockets.protocol import Side, State

from service import wsio

_OPEN: Final = State.OPEN
_HEAD16: Final = struct.Struct("!BBH")
_HEAD64: Final = struct.Struct("!BBQ")
_MASK_POOL_BYTES: Final = 4096
_MAX_HEAD: Final = 64 * 1024


class _Lane:
    _ws: Any
    _transport: Any
    _deliver: Any
    _receive: Any
    _flush: Any
    _after_close_step: Any
    closed_error: Any

    def data_received(self, data: bytes) -> None:
        if self._lane:
            self._lane_received(data)
            return
        if self._ws.state is State.CONNECTING and self._lane_possible:
            # Find the end of the HTTP head: websockets parses the head, our framer everything after
            # it, so the library's parser is never left holding part of a frame.
            seen = len(self._head)
            self._head += data
            end = self._head.find(b"\r\n\r\n", max(0, seen - 3))
            if end < 0:
                if len(self._head) > _MAX_HEAD:
                    self._lane_possible = False
                self._receive(data)
                return
            cut = end + 4 - seen
            self._lane_possible = False
            self._head = bytearray()
            self._receive(data[:cut])
            if self._ws.state is _OPEN:
                self._lane = True
                if len(data) > cut:
                    self._lane_received(data[cut:])
            elif len(data) > cut:
                self._receive(data[cut:])
            return
        self._receive(data)


    def _lane_received(self, data: bytes) -> None:
        """RFC 6455 section 5.2 framing for the common case: whole unfragmented text/binary data
        frames, masked as the side requires, within ``max_size``, are unmasked and delivered here.
        Every other frame (control frames, fragments, protocol violations) is handed whole to the
        ``websockets`` parser, which handles it (ping -> pong, close handshake, fail with 1002/1009);
        since it only ever receives whole frames, it is always at a frame boundary."""
        buffer = self._rbuf
        if buffer:
            buffer += data
            view: bytes | bytearray = buffer
        else:
            view = data
        size = len(view)
        pos = 0
        expect_mask = self._expect_mask
        max_size = self._max_size
        while size - pos >= 2:
            if self._ws.state is not _OPEN:  # closing: the library discards what follows its close
                self._lane = False
                self._receive(bytes(view[pos:]))
                pos = size
                break
            first = view[pos]
            second = view[pos + 1]
            length = second & 0x7F
            head = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (view[pos + 2] << 8) | view[pos + 3]
                head = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(view[pos + 2 : pos + 10], "big")
                head = pos + 10
            masked = second & 0x80
            if masked:
                head += 4
            if max_size is not None and length > max_size:  # the library fails it with 1009
                self._lane = False
                self._receive(bytes(view[pos:]))
                pos = size
                break
            end = head + length
            if end > size:
                break
            if (first == 0x81 or first == 0x82) and masked == expect_mask and not self._fragmented:
                if masked:
                    self._deliver(apply_mask(view[head:end], view[head - 4 : head]))
                else:
                    self._deliver(bytes(view[head:end]))
            else:
                opcode = first & 0x0F
                if opcode in (1, 2) and not first & 0x80:
                    self._fragmented = True
                elif opcode == 0 and first & 0x80:
                    self._fragmented = False
                self._receive(bytes(view[pos:end]))
            pos = end
        if buffer:
            del buffer[:pos]
        elif pos < size:
            self._rbuf = bytearray(view[pos:])
        if self._ws.state is not _OPEN:  # e.g. a consumer failure failed the connection
            self._lane = False
            self._flush()
            self._after_close_step()


    def send_nowait(self, text: str) -> None:
        """Write one text message now, regardless of the write buffer (callers that own ordering).

        One unfragmented text frame (RFC 6455 section 5.2), masked with a key from ``os.urandom``
        when this is the client (section 5.3); written directly, as ``websockets`` would frame it
        (we never fragment, so its protocol state needs no update)."""
        transport = self._transport
        if self._ws.state is not _OPEN or transport is None or transport.is_closing():
            raise self.closed_error()
        payload = text.encode()
        length = len(payload)
        mask_bit = self._send_mask
        if length < 126:
            header = bytes((0x81, mask_bit | length))
        elif length < 65536:
            header = _HEAD16.pack(0x81, mask_bit | 126, length)
        else:
            header = _HEAD64.pack(0x81, mask_bit | 127, length)
        if mask_bit:
            key = self._mask_key()
            transport.write(header + key + apply_mask(payload, key))
        else:
            transport.write(header + payload)


    def _mask_key(self) -> bytes:
        pool, at = self._mask_pool, self._mask_at
        if at + 4 > len(pool):
            pool, at = os.urandom(_MASK_POOL_BYTES), 0
            self._mask_pool = pool
        self._mask_at = at + 4
        return pool[at : at + 4]


def install() -> None:
    """Patch the lane into ``service.wsio.SansIOWebSocket`` (this process only)."""
    cls: Any = wsio.SansIOWebSocket
    original_init = cls.__init__

    def __init__(self: Any, protocol: Any, **kwargs: Any) -> None:
        original_init(self, protocol, **kwargs)
        self._lane = False
        self._lane_possible = True
        self._head = bytearray()
        self._rbuf = bytearray()
        self._fragmented = False
        is_client = protocol.side is Side.CLIENT
        self._expect_mask = 0 if is_client else 0x80
        self._send_mask = 0x80 if is_client else 0
        self._max_size = getattr(protocol, "max_message_size", getattr(protocol, "max_size", None))
        self._mask_pool = b""
        self._mask_at = 0

    cls.__init__ = __init__
    cls._receive = cls.data_received  # the websockets parser path, for everything the lane leaves
    for name in ("data_received", "_lane_received", "send_nowait", "_mask_key"):
        setattr(cls, name, getattr(_Lane, name))
