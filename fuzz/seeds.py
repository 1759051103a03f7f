#!/usr/bin/env python3
"""Writes the named seed inputs under fuzz/corpus/<target>/ (RFC 6455 examples, Autobahn-style
edge cases). Run it after changing a seed or an input format in fuzz/src/checks.rs; commit what
it writes. Files it does not name are left alone, so hand-made seeds may sit beside these."""

import json
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # RFC 6455 §5.7's masking key
SEEDS = {}


def seed(target, name, data):
    assert (target, name) not in SEEDS, name
    SEEDS[(target, name)] = bytes(data)


def mask(payload, key=KEY, offset=0):
    return bytes(b ^ key[(offset + i) % 4] for i, b in enumerate(payload))


def head(b0, length, key=KEY):
    """A frame header with the shortest length encoding; key None: unmasked."""
    m = 0x80 if key is not None else 0
    if length < 126:
        out = bytes([b0, m | length])
    elif length <= 0xFFFF:
        out = bytes([b0, m | 126]) + struct.pack(">H", length)
    else:
        out = bytes([b0, m | 127]) + struct.pack(">Q", length)
    return out + (key or b"")


def frame(b0, payload, key=KEY):
    """A masked client frame (key None: unmasked, as a server sends)."""
    return head(b0, len(payload), key) + (mask(payload, key) if key else payload)


def reads(*sizes):
    """The read-size header of the message and utf8 targets: () is one byte per read."""
    return bytes([len(sizes)] + [s - 1 for s in sizes])


# ---- frame_head: bare headers (and whatever follows them)
FH = "frame_head"
seed(FH, "rfc-5.7-unmasked-hello", frame(0x81, b"Hello", None))
seed(FH, "rfc-5.7-masked-hello", frame(0x81, b"Hello"))
seed(FH, "rfc-5.7-fragment-1-hel", frame(0x01, b"Hel", None))
seed(FH, "rfc-5.7-fragment-2-lo", frame(0x80, b"lo", None))
seed(FH, "rfc-5.7-unmasked-ping", frame(0x89, b"Hello", None))
seed(FH, "rfc-5.7-masked-pong", frame(0x8A, b"Hello"))
seed(FH, "rfc-5.7-256-bytes-binary", head(0x82, 256, None))
seed(FH, "rfc-5.7-64k-binary", head(0x82, 65536, None))
seed(FH, "masked-16bit-length", head(0x82, 300))
seed(FH, "masked-64bit-length", head(0x82, 1 << 40))
seed(FH, "len64-top-bit-set", bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]) + KEY)
seed(FH, "len64-max-allowed", bytes([0x82, 0xFF, 0x7F] + [0xFF] * 7) + KEY)
seed(FH, "non-minimal-16bit-length", bytes([0x82, 0xFE, 0x00, 0x7D]) + KEY)
seed(FH, "non-minimal-64bit-length", bytes([0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]) + KEY)
seed(FH, "rsv1-set", bytes([0xC1, 0x80]) + KEY)
seed(FH, "rsv3-set", bytes([0x91, 0x80]) + KEY)
seed(FH, "reserved-opcode-3", bytes([0x83, 0x80]) + KEY)
seed(FH, "reserved-opcode-b", bytes([0x8B, 0x80]) + KEY)
seed(FH, "fragmented-ping", bytes([0x09, 0x80]) + KEY)
seed(FH, "ping-126-bytes", head(0x89, 126))
seed(FH, "close-empty", frame(0x88, b""))
seed(FH, "continuation-not-fin", head(0x00, 10))
seed(FH, "truncated-after-126", bytes([0x82, 0xFE, 0x01]))

# ---- message: a read-size header, then a client byte stream
MS = "message"
hello = frame(0x81, b"Hello")
seed(MS, "rfc-5.7-masked-hello-bytewise", reads() + hello)
seed(MS, "rfc-5.7-masked-hello-reads-3-1", reads(3, 1) + hello)
seed(MS, "rfc-5.7-fragmented-hel-lo", reads(4) + frame(0x01, b"Hel") + frame(0x80, b"lo"))
seed(
    MS,
    "fragmented-text-ping-between",  # Autobahn 5.6
    reads(5, 2)
    + frame(0x01, b"fragment1")
    + frame(0x89, b"ping payload")
    + frame(0x80, b"fragment2"),
)
seed(
    MS,
    "fragmented-binary-pong-close-between",
    reads(7) + frame(0x02, b"\x00\x01") + frame(0x8A, b"") + frame(0x80, b"\x02") + frame(0x88, b"\x03\xe8"),
)
seed(MS, "eight-fragments-at-limit", reads(11) + frame(0x01, b"a") + frame(0x00, b"b") * 6 + frame(0x80, b"c"))
seed(MS, "nine-fragments-over-limit", reads(13) + frame(0x01, b"a") + frame(0x00, b"b") * 7 + frame(0x80, b"c"))
seed(MS, "empty-fragments", reads(6) + frame(0x01, b"") + frame(0x00, b"") + frame(0x80, b""))
kosme = "κόσμε".encode()
seed(MS, "invalid-utf8-mid-message", reads(9) + frame(0x01, kosme) + frame(0x00, b"\xed\xa0\x80edited") + frame(0x80, b"x"))
seed(MS, "utf8-code-point-split-across-frames", reads(2) + frame(0x01, kosme[:3]) + frame(0x80, kosme[3:]))
seed(MS, "utf8-truncated-at-fin", reads() + frame(0x81, b"\xce\xba\xe1\xbd"))
seed(MS, "invalid-utf8-single-frame", reads(64) + frame(0x81, b"\xf4\x90\x80\x80"))
seed(MS, "len64-top-bit-set", reads(3) + bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]) + KEY)
seed(MS, "message-at-4096", reads(200) + frame(0x02, b"x" * 4000) + frame(0x80, b"y" * 96))
seed(MS, "message-over-4096-fragments", reads(200) + frame(0x02, b"x" * 4000) + frame(0x80, b"y" * 97))
seed(MS, "message-over-4096-declared", reads() + head(0x82, 4097) + b"xx")
seed(MS, "close-1000-with-reason", reads(1, 2) + frame(0x88, b"\x03\xe8bye"))
seed(MS, "close-1005-invalid", reads() + frame(0x88, b"\x03\xed"))
seed(MS, "close-one-byte", reads() + frame(0x88, b"\x03"))
seed(MS, "close-reason-invalid-utf8", reads(4) + frame(0x88, b"\x03\xe8\xce\xba\xe1\xbd"))
seed(MS, "unmasked-frame", reads() + frame(0x81, b"hi", None))
seed(MS, "continuation-without-start", reads() + frame(0x80, b"lo"))
seed(MS, "text-inside-fragmented-message", reads() + frame(0x01, b"a") + frame(0x81, b"b"))
seed(MS, "ping-125-bytes", reads(50) + frame(0x89, b"p" * 125))
seed(MS, "ping-126-bytes", reads(50) + frame(0x89, b"p" * 126))
seed(MS, "fragmented-ping", reads() + frame(0x09, b"p"))
seed(MS, "rsv2-set", reads() + frame(0xA1, b"x"))
seed(MS, "reserved-opcode-b", reads() + frame(0x8B, b"x"))
seed(MS, "binary-256-bytes", reads(100, 7) + frame(0x82, bytes(range(256))))
seed(MS, "two-messages-one-read", reads(255) + frame(0x81, b"one") + frame(0x82, b"two") + frame(0x89, b""))


def deflated(*sizes):
    """reads(), with the flag (bit 4) that says permessage-deflate was negotiated."""
    return bytes([0x10 | len(sizes)] + [s - 1 for s in sizes])


def compress(data, level=6):
    """RFC 7692 §7.2.1: raw DEFLATE, sync flush, the 00 00 ff ff tail removed."""
    z = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


rfc_hello = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])  # RFC 7692 §7.2.3.1
seed(MS, "deflate-rfc-7.2.3.1-hello", deflated(4) + frame(0xC1, rfc_hello))
seed(MS, "deflate-rfc-7.2.3.3-stored-block", deflated() + frame(0xC2, bytes.fromhex("000500faff48656c6c6f00")))
seed(MS, "deflate-rfc-7.2.3.4-bfinal", deflated(3) + frame(0xC1, bytes.fromhex("f348cdc9c90700" + "00")))
seed(MS, "deflate-rfc-7.2.3.5-two-blocks", deflated(5) + frame(0xC1, bytes.fromhex("f248050000 00ffff cac9c90700".replace(" ", ""))))
seed(MS, "deflate-rfc-7.2.3.2-shared-window-refused", deflated() + frame(0xC1, rfc_hello) + frame(0xC1, bytes.fromhex("f200110000")))
seed(
    MS,
    "deflate-fragmented-ping-between",
    deflated(6, 1) + frame(0x41, rfc_hello[:3]) + frame(0x89, b"p") + frame(0x80, rfc_hello[3:]) + frame(0x81, b"plain"),
)
seed(MS, "deflate-json-at-4096", deflated(200) + frame(0xC1, compress(b'{"msg":"hi"}' * 341 + b"    ")))
seed(MS, "deflate-bomb-over-4096", deflated(20) + frame(0xC2, compress(bytes(4097), 9)))
seed(MS, "deflate-bomb-64k-in-fragments", deflated(9) + frame(0x42, compress(bytes(65536), 9)[:40]) + frame(0x80, compress(bytes(65536), 9)[40:]))
seed(MS, "deflate-invalid-utf8-inflated", deflated() + frame(0xC1, compress(b"ok \xc0\xaf")))
seed(MS, "deflate-not-deflate", deflated() + frame(0xC2, b"\xff\xff\xff"))
seed(MS, "deflate-rsv1-on-continuation", deflated() + frame(0x41, rfc_hello[:3]) + frame(0xC0, rfc_hello[3:]))
seed(MS, "deflate-rsv1-on-ping", deflated() + frame(0xC9, b""))
seed(MS, "rsv1-without-deflate", reads(2) + frame(0xC1, rfc_hello))

# ---- utf8: a read-size header, then the text
U8 = "utf8"
seed(U8, "autobahn-6.2-hello-utf8", reads() + "Hello-µ@ßöäüàá-UTF-8!!".encode())
seed(U8, "kosme", reads(3) + kosme)
seed(U8, "max-code-point-u10ffff", reads(1, 2) + b"\xf4\x8f\xbf\xbf")
seed(U8, "first-4-byte-u10000", reads(2) + b"\xf0\x90\x80\x80")
seed(U8, "over-max-f4-90", reads() + b"\xf4\x90\x80\x80")
seed(U8, "surrogate-ed-a0-80", reads() + b"\xed\xa0\x80")
seed(U8, "overlong-c0-af", reads() + b"\xc0\xaf")
seed(U8, "overlong-e0-80-af", reads(1) + b"\xe0\x80\xaf")
seed(U8, "byte-ff", reads() + b"\xff")
seed(U8, "truncated-kosme", reads(2) + b"\xce\xba\xe1\xbd")
seed(U8, "lone-continuation", reads() + b"\x80")
seed(U8, "truncated-4-byte", reads() + b"a\xf0\x9f\x98")
seed(U8, "noncharacter-u-ffff", reads() + b"\xef\xbf\xbf")
seed(U8, "fail-fast-after-valid-prefix", reads(12, 1) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited")
seed(U8, "broken-3-byte-sequence", reads(2) + b"\xe2\x82\x41")

# ---- mask: key, offset (u32 LE), alignment, split, payload
MK = "mask"
seed(MK, "rfc-5.7-hello", KEY + struct.pack("<I", 0) + bytes([0, 2]) + mask(b"Hello"))
seed(MK, "offset-3-unaligned-40-bytes", KEY + struct.pack("<I", 3) + bytes([5, 17]) + bytes(range(40)))
seed(MK, "large-offset-split-at-8", bytes([1, 2, 3, 4]) + struct.pack("<I", 0xFFFFFFFF) + bytes([7, 8]) + bytes(range(100)))

# ---- handshake: a request head (and maybe what follows it)
HS = "handshake"
rfc = (
    b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
ok_fields = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
seed(HS, "rfc-1.3-opening-handshake", rfc)
seed(HS, "rfc-1.3-then-a-frame", rfc + hello)
seed(HS, "plain-get-healthz", b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
seed(HS, "tokens-mixed-case-lists", b"GET / HTTP/1.1\r\nhost: h\r\nupgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\nsec-websocket-key:  AQIDBAUGBwgJCgsMDQ4PEA==\t\r\nsec-websocket-version: 13\r\n\r\n")
seed(HS, "lf-line-endings", rfc.replace(b"\r\n", b"\n"))
seed(HS, "missing-host", b"GET / HTTP/1.1\r\n" + ok_fields + b"Sec-WebSocket-Version: 13\r\n\r\n")
seed(HS, "http-1.0", b"GET / HTTP/1.0\r\nHost: h\r\n" + ok_fields + b"Sec-WebSocket-Version: 13\r\n\r\n")
seed(HS, "post", b"POST / HTTP/1.1\r\nHost: h\r\n" + ok_fields + b"Sec-WebSocket-Version: 13\r\n\r\n")
seed(HS, "version-8", b"GET / HTTP/1.1\r\nHost: h\r\n" + ok_fields + b"Sec-WebSocket-Version: 8\r\n\r\n")
seed(HS, "version-twice", b"GET / HTTP/1.1\r\nHost: h\r\n" + ok_fields + b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n\r\n")
seed(HS, "key-twice", rfc.replace(b"Origin", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin"))
seed(HS, "key-8-bytes", rfc.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="))
seed(HS, "key-not-base64", rfc.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZQ!!"))
seed(HS, "missing-connection-upgrade", rfc.replace(b"Connection: Upgrade", b"Connection: keep-alive"))
seed(HS, "leading-empty-lines", b"\r\n\n" + rfc)  # RFC 9112 §2.2: ignored
seed(HS, "incomplete-head", rfc[:-2])
seed(HS, "garbage", b"GARBAGE\x01\r\n\r\n")
seed(HS, "post-with-body", b"POST /send?room=a HTTP/1.1\r\nHost: h\r\nContent-Length: 22\r\n\r\n" + b'{"name":"a","msg":"b"}')
seed(HS, "post-chunked-411", b"POST /send HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
seed(HS, "post-two-lengths", b"POST /send HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
seed(HS, "post-length-19-digits", b"POST /send HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000000000000\r\n\r\n")
seed(HS, "header-over-256-bytes", b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 300 + b"\r\n\r\n")

# ---- close: a close frame's payload
CL = "close"
seed(CL, "empty", b"")
seed(CL, "one-byte", b"\x03")
for code in [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999]:
    seed(CL, f"code-{code}-valid", struct.pack(">H", code))
for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]:
    seed(CL, f"code-{code}-invalid", struct.pack(">H", code))
seed(CL, "1000-with-reason", b"\x03\xe8bye")
seed(CL, "reason-invalid-utf8", b"\x03\xe8\xce\xba\xe1\xbd")
seed(CL, "reason-123-bytes", b"\x03\xe8" + b"r" * 123)
seed(CL, "reason-124-bytes-multibyte", b"\x03\xe8" + "é".encode() * 62)

# ---- connection: ops (see `checks::connection`)
CN = "connection"
UPGRADE = bytes([3, 0])  # the §1.3 request in one read
WRITE_ALL = bytes([5, 255])


def client(b0, payload, size=0, key=KEY):
    assert len(payload) < 256
    return bytes([1, b0, len(payload)]) + key + payload + bytes([size])


def raw(data, size=0):
    assert len(data) < 256
    return bytes([0, len(data), size]) + data


seed(CN, "rfc-upgrade-hello-echo", UPGRADE + client(0x81, b"Hello") + WRITE_ALL)
DEFLATE_UPGRADE = bytes([3, 0x80])  # the same, offering permessage-deflate, in one read
seed(CN, "deflate-compressed-hello-echo", DEFLATE_UPGRADE + client(0xC1, rfc_hello) + WRITE_ALL)
seed(CN, "deflate-bomb-1009", DEFLATE_UPGRADE + client(0xC2, compress(bytes(5000), 9)) + WRITE_ALL)
seed(CN, "deflate-rsv1-on-ping-1002", DEFLATE_UPGRADE + client(0xC9, b"") + WRITE_ALL)
seed(CN, "rsv1-without-deflate-1002", UPGRADE + client(0xC1, rfc_hello) + WRITE_ALL)
seed(CN, "upgrade-byte-by-byte", bytes([3, 1]) + client(0x82, b"\x00\x01", 1) + WRITE_ALL)
seed(CN, "fragmented-text-ping-between", UPGRADE + client(0x01, b"Hel") + client(0x89, b"ping") + client(0x80, b"lo") + WRITE_ALL)
seed(CN, "client-close-echoed-then-eof", UPGRADE + WRITE_ALL + client(0x88, b"\x03\xe8bye") + bytes([9]) + WRITE_ALL)
seed(CN, "server-close-then-client-close", UPGRADE + bytes([7, 0, 10]) + WRITE_ALL + client(0x88, b"\x03\xe8") + WRITE_ALL + bytes([9]))
seed(CN, "fail-policy", UPGRADE + bytes([8, 2, 255]) + bytes([5, 3]) + WRITE_ALL)
seed(CN, "invalid-utf8-closes-1007", UPGRADE + client(0x81, b"\xce\xba\xe1\xbd\xed\xa0\x80") + WRITE_ALL)
seed(CN, "unmasked-frame-closes-1002", UPGRADE + raw(frame(0x81, b"hi", None)) + WRITE_ALL)
seed(CN, "slow-consumer-overflow", UPGRADE + WRITE_ALL + bytes([6, 100, 6, 100, 5, 1, 6, 100]) + WRITE_ALL)
seed(CN, "partial-writes", UPGRADE + client(0x81, b"x" * 200) + bytes([5, 1, 5, 2, 5, 3]) + bytes([6, 9, 5, 1]) + WRITE_ALL)
seed(CN, "ping-repeated", UPGRADE + client(0x89, b"p" * 20) + bytes([2, 5]) + WRITE_ALL)
seed(CN, "plain-get-answered", raw(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", 7) + bytes([5, 2]) + WRITE_ALL + bytes([9]))
seed(CN, "post-body-split-reads", raw(b"POST /send HTTP/1.1\r\nHost: h\r\nContent-Length: 22\r\n\r\n" + b'{"name":"a","msg":"b"}', 5) + WRITE_ALL + bytes([9]))
seed(CN, "post-body-over-cap-413", raw(b"POST /send HTTP/1.1\r\nHost: h\r\nContent-Length: 99999\r\n\r\nxx") + WRITE_ALL)
seed(CN, "post-body-never-finished", raw(b"POST /send HTTP/1.1\r\nHost: h\r\nContent-Length: 50\r\n\r\nabc") + bytes([4, 255, 4, 255]))
seed(CN, "bad-request-400", raw(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n") + WRITE_ALL)
seed(CN, "handshake-timeout", raw(b"GET / HTTP/1.1\r\n") + bytes([4, 255, 4, 255]))
seed(CN, "close-timeout", UPGRADE + bytes([7, 1, 0]) + bytes([4, 50]) + WRITE_ALL)
seed(CN, "eof-while-flushing-close", UPGRADE + client(0x88, b"\x03\xe8") + bytes([9]) + WRITE_ALL)
seed(CN, "message-too-big-1009", UPGRADE + raw(head(0x82, 5000) + b"xxxx") + WRITE_ALL)
seed(CN, "frames-after-close-ignored", UPGRADE + client(0x88, b"") + client(0x81, b"late") + WRITE_ALL)
seed(CN, "socket-error", UPGRADE + client(0x81, b"x") + bytes([10]) + WRITE_ALL)

# ---- chat: a text message from a client
CH = "chat"
seed(CH, "message", b'{"name":"ann","msg":"hello"}')
seed(CH, "message-extra-fields-escapes", b'{"name":"ann","msg":"hi \\"there\\" <b>\\u00e9\\ud83d\\ude00","x":[1,{"y":null}],"z":1e400}')
seed(CH, "name-64-chars", json.dumps({"name": "é" * 64, "msg": "x"}).encode())
seed(CH, "name-65-chars", json.dumps({"name": "é" * 65, "msg": "x"}).encode())
seed(CH, "msg-4000-chars", json.dumps({"name": "a", "msg": "m" * 4000}).encode())
seed(CH, "msg-4001-chars", json.dumps({"name": "a", "msg": "m" * 4001}).encode())
seed(CH, "empty-name", b'{"name":"","msg":"x"}')
seed(CH, "missing-msg", b'{"name":"a"}')
seed(CH, "name-not-string", b'{"name":1,"msg":"x"}')
seed(CH, "duplicate-name", b'{"name":"a","name":"b","msg":"x"}')
seed(CH, "array-form", b'["ann","hello"]')
seed(CH, "not-json", b"not json")
seed(CH, "truncated", b'{"name":"a"')
seed(CH, "trailing-characters", b'{"name":"a","msg":"b"} x')
seed(CH, "lone-surrogate-escape", b'{"name":"a","msg":"\\ud800"}')
seed(CH, "deeply-nested-extra", b'{"name":"a","msg":"b","x":' + b"[" * 200 + b"]" * 200 + b"}")

# ---- resp: RESP2 replies from Redis, one after another as a pipeline returns them
RS = "resp"


def bulk(data):
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(*items):
    return b"*%d\r\n" % len(items) + b"".join(items)


seed(RS, "status-ok", b"+OK\r\n")
seed(RS, "error-noscript", b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
seed(RS, "integers-min-max", b":9223372036854775807\r\n:-9223372036854775808\r\n:0\r\n")
seed(RS, "bulk-binary-with-crlf", bulk(b"he\r\nllo\x00\xff") + bulk(b""))
seed(RS, "nil-bulk-and-array", b"$-1\r\n*-1\r\n*0\r\n")
seed(RS, "pubsub-message", array(bulk(b"message"), bulk(b"room:lobby"), bulk(b'{"seq":7,"msg":"hi"}')))
seed(RS, "subscribe-reply", array(bulk(b"subscribe"), bulk(b"room:lobby"), b":1\r\n"))
seed(
    RS,
    "xrange-depth-3",
    array(
        array(bulk(b"7-0"), array(bulk(b"body"), bulk(b'{"msg":"a"}'), bulk(b"ts"), bulk(b"1700000000000"))),
        array(bulk(b"8-0"), array(bulk(b"body"), bulk(b'{"msg":"b"}'))),
    ),
)
seed(RS, "pipeline-every-type", b"+OK\r\n-ERR x\r\n:-1\r\n" + bulk(b"v") + b"$-1\r\n" + array(b":1\r\n", array(b"+x\r\n")))
seed(RS, "incomplete-bulk", b"$10\r\nabc")
seed(RS, "bulk-over-64mib", b"$67108865\r\n")
seed(RS, "array-over-2-20-elements", b"*1048577\r\n")
seed(RS, "lying-array-header", b"*1048576\r\n:1\r\n")
seed(RS, "nested-9-deep", b"*1\r\n" * 9 + b":1\r\n")
seed(RS, "length-overflow", b"$18446744073709551616\r\n")
seed(RS, "integer-overflow", b":9223372036854775808\r\n")
seed(RS, "bare-lf", b"+OK\n")
seed(RS, "negative-length-2", b"$-2\r\n")
seed(RS, "bulk-without-crlf", b"$3\r\nabcd\r\n")
seed(RS, "resp3-map", b"%1\r\n+a\r\n:1\r\n")
seed(RS, "command-args-nul-separated", b"XADD\x00room:a\x00*\x00body\x00\r\n$-1")

# ---- sio: a mode byte (even: echo, odd: chat), then ops split at 0 bytes (see `checks::sio`)
SIO = "sio"


def sio_ops(mode, *ops):
    return bytes([mode]) + b"\x00".join(ops)


PH = b'{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}'
seed(SIO, "echo-suite-connect", sio_ops(0, b"0", b'T0{"token":"123"}', b"0/custom,"))
seed(SIO, "echo-suite-unknown-namespace", sio_ops(0, b"0/random", b"0"))
seed(SIO, "echo-suite-message", sio_ops(0, b"0", b'2["message",1,"2",{"3":[true]}]'))
seed(SIO, "echo-suite-message-with-ack", sio_ops(0, b"0", b'2456["message-with-ack",1,"2",{"3":[false]}]'))
seed(SIO, "echo-suite-binary", sio_ops(0, b"0", b'52-["message",' + PH + b"]", b"b\x01\x02\x03", b"b\x04\x05\x06"))
seed(SIO, "echo-suite-binary-ack", sio_ops(0, b"0", b'52-789["message-with-ack",' + PH + b"]", b"b\x01", b"b\x02"))
seed(SIO, "echo-suite-disconnect", sio_ops(0, b"0", b"0/custom", b"1/custom", b'2["message","to main"]', b"1", b'2["message"]'))
seed(SIO, "echo-suite-invalid", sio_ops(0, b"0", b"abc", b'T0', b'T2{}'))
seed(SIO, "echo-invalid-ack-id", sio_ops(0, b"0", b'2abc["message-with-ack",1]'))
seed(SIO, "echo-connect-timeout", sio_ops(0, b"T0", b"w", b"0"))
seed(SIO, "echo-attachments-never-come", sio_ops(0, b"0", b'52-["message",' + PH + b"]", b"bx", b"w", b"b"))
seed(SIO, "echo-text-between-attachments", sio_ops(0, b"0", b'52-["message",' + PH + b"]", b"bx", b'2["message"]'))
seed(SIO, "echo-too-many-attachments", sio_ops(0, b"0", b'511-["message"]'))
seed(SIO, "echo-binary-without-packet", sio_ops(0, b"0", b"b\x01"))
seed(SIO, "echo-bad-placeholder", sio_ops(0, b"0", b'51-["message",{"_placeholder":true,"num":5}]', b"bx"))
seed(SIO, "chat-events-and-acks", sio_ops(1, b"0", b"T0", b'21["chat message","hi",{"a":[1]}]', b'T2["x"]'))
seed(SIO, "chat-binary-event", sio_ops(1, b"0", b"T0", b'51-["file",{"_placeholder":true,"num":0}]', b"b\x00\xff"))
seed(SIO, "chat-rooms-and-namespaces", sio_ops(1, b'0{"room":"q"}', b"T0/a,", b'T2/a,["x"]', b'2["y"]', b"o", b"0"))
seed(SIO, "chat-recover-unknown-pid", sio_ops(1, b"0", b'T0{"pid":"abc","offset":":0"}', b'2["x"]', b"Oroom=r", b'T0{"pid":"abc","offset":":1"}'))
seed(SIO, "chat-invalid-room", sio_ops(1, b'0{"room":".."}', b"Oroom=a%20b", b"T0", b"w"))
seed(SIO, "chat-event-before-join", sio_ops(1, b'2["x"]', b"1"))
seed(SIO, "chat-number-out-of-serde-range", sio_ops(1, b"0", b'2["x",1e400,-1e400]'))

# ---- eio_payload: an Engine.IO long-polling POST body (also read as a query and a sid)
EP = "eio_payload"
seed(EP, "protocol-example-payload", "4hello\x1e4€\x1ebAQIDBA==".encode())
seed(EP, "pong", b"3")
seed(EP, "probe-ping", b"2probe")
seed(EP, "close", b"1")
seed(EP, "every-type", b"0\x1e1\x1e2\x1e3\x1e4\x1e5\x1e6")
seed(EP, "empty-body", b"")
seed(EP, "empty-records", b"\x1e\x1e")
seed(EP, "unknown-type", b"4a\x1e9")
seed(EP, "binary-empty", b"b")
seed(EP, "binary-unpadded", b"bAQ")
seed(EP, "binary-short-padding", b"bAQ=")
seed(EP, "binary-over-padded", b"bAQ===")
seed(EP, "binary-trailing-bits", b"bAR==")
seed(EP, "binary-not-base64", b"b!!")
seed(EP, "invalid-utf8", b"4\xff")
seed(EP, "utf8-split-by-separator", b"4\xe2\x1e\x82\xac")
seed(EP, "long-message", b"4" + b"x" * 3000)
seed(EP, "socketio-event", b'42["message",1,"2",{"3":[true]}]')
seed(EP, "socketio-binary-attachments", b'452-["m",{"_placeholder":true,"num":0}]\x1ebAQID\x1ebBAUG')
seed(EP, "query", b"/socket.io/?EIO=4&transport=polling&t=N8hyd6w&sid=AAAAAErOdgnnPk3s&EIO=3")
seed(EP, "query-bare-keys", b"/socket.io/?EIO&transport&sid")
seed(EP, "sid", b"AAAAAErOdgnnPk3s")
seed(EP, "sid-with-padding", b"AAAAAErOdgnnPk3=")


def main():
    for (target, name), data in sorted(SEEDS.items()):
        os.makedirs(os.path.join(ROOT, target), exist_ok=True)
        with open(os.path.join(ROOT, target, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds under {ROOT}")


if __name__ == "__main__":
    main()
