#!/usr/bin/env python3
"""Writes the seed corpus: a few real inputs per fuzz target.

Usage: python3 fuzz/seeds.py [OGG_OPUS_FILE ...]

The Ogg Opus files (ffmpeg's, e.g. `ffmpeg -f lavfi -i sine=d=0.4 -c:a
libopus -f ogg a.opus`) seed the page scanner, the demuxer and the Opus
framing; everything else is written here. The seeds are committed under
fuzz/corpus/<target>/, so running the fuzzers does not need this script.
"""
import base64
import hashlib
import hmac
import json
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ogg_pages(data):
    at = 0
    while at + 27 <= len(data) and data[at:at + 4] == b"OggS":
        nsegs = data[at + 26]
        lacing = data[at + 27:at + 27 + nsegs]
        end = at + 27 + nsegs + sum(lacing)
        yield data[at:end], lacing, data[at + 27 + nsegs:end]
        at = end


def ogg_packets(data):
    packet = b""
    for _, lacing, body in ogg_pages(data):
        at = 0
        for l in lacing:
            packet += body[at:at + l]
            at += l
            if l < 255:
                yield packet
                packet = b""


def ogg(files):
    for i, path in enumerate(files):
        with open(path, "rb") as f:
            data = f.read()
        # split byte first: whole, then pieces of up to 1, 16 and 4096 bytes
        for seed in (0, 13, 4, 12):
            put("demux", f"ffmpeg{i}-split{seed}", bytes([seed]) + data)
        pages = list(ogg_pages(data))
        for k, (page, _, _) in enumerate(pages[:3] + pages[-1:]):
            put("ogg_page", f"ffmpeg{i}-page{k}", page)
        for k, packet in enumerate(list(ogg_packets(data))[:4]):
            put("opus", f"ffmpeg{i}-packet{k}", packet)
    if len(files) >= 2:
        # a chained stream, as liquidsoap sends on a track change
        chained = b"".join(open(p, "rb").read() for p in files[:2])
        put("demux", "chained", b"\x07" + chained)


def chunked():
    put("chunked", "two-chunks", b"\x00" + b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n")
    put("chunked", "trailers", b"\x05" + b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\nGET / HTTP/1.1\r\n")
    put("chunked", "hex-sizes", b"\x0c" + b"1A\r\n" + b"x" * 26 + b"\r\nff\r\n" + b"y" * 255 + b"\r\n0\r\n\r\n")


def http_heads():
    heads = {
        "listen-page": "GET /spaces/abc123/live.opus?ticket=t.k.n&token=x HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\nConnection: keep-alive\r\n\r\n",
        "source-chunked": "PUT /spaces/abc123/source HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln\r\nContent-Type: audio/ogg\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nOggS\x00\r\n0\r\n\r\n",
        "icecast-source": "SOURCE /spaces/abc123/source HTTP/1.0\r\nAuthorization: Basic c291cmNlOmV5SmhiR2NpT2lKSVV6STFOaUo5LmUzMC5jMmxu\r\nContent-Type: audio/ogg\r\nice-name: test\r\n\r\nOggS\x00\x02",
        "json-post": "POST /api/spaces/abc123/requests HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"name\":\"Alice\"}",
        "ambiguous": "PUT /spaces/x/source HTTP/1.1\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\nhello",
        "curl": "GET /api/spaces HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    }
    for i, (name, head) in enumerate(heads.items()):
        put("http_head", name, bytes([i * 3]) + head.encode("latin-1"))


def ranges():
    for name, size, value in [
        ("first-kb", 50_000, "bytes=0-1023"),
        ("open-end", 50_000, "bytes=1000-"),
        ("suffix", 50_000, "bytes=-500"),
        ("multi", 50_000, "bytes=0-10, 20-30"),
        ("other-unit", 50_000, "items=0-5"),
        ("empty-file", 0, "bytes=0-"),
    ]:
        prefix = bytes([0]) if size == 0 else bytes([2]) + struct.pack("<Q", size)
        put("range", name, prefix + value.encode())


SECRET = b"0123456789abcdef0123456789abcdef"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def jwt(header, payload):
    signed = b64(header) + b"." + b64(payload)
    tag = hmac.new(SECRET, signed, hashlib.sha256).digest()
    return signed + b"." + b64(tag)


def tokens():
    now = struct.pack("<Q", 1_700_000_000)
    boot = struct.pack("<Q", 42)
    header = json.dumps({"typ": "JWT", "alg": "HS256"}, separators=(",", ":")).encode()
    claims = json.dumps({"sub": "alice", "iss": "tribune", "iat": 1_700_000_000,
                         "exp": 1_700_003_600, "role": "speaker", "space": "abc123"},
                        separators=(",", ":")).encode()
    ticket = json.dumps({"seq": 7, "nb": 1000, "boot": 42, "exp": 1_700_000_060},
                        separators=(",", ":")).encode()
    put("token", "raw-token", b"\x00" + now + boot + jwt(header, claims))
    put("token", "raw-garbage", b"\x00" + now + boot + b"not.a.jwt")
    put("token", "signed-claims", b"\x01" + now + boot + bytes([len(header)]) + header + claims)
    put("token", "signed-ticket", b"\x01" + now + boot + bytes([len(header)]) + header + ticket)
    none = json.dumps({"alg": "none"}).encode()
    put("token", "alg-none", b"\x01" + now + boot + bytes([len(none)]) + none + claims)
    put("token", "round-trip", b"\x03" + now + boot + b"\x05alice\x01\x06abc123\x01"
        + struct.pack("<QQQQQQ", 1_699_999_000, 3600, 7, 1000, 1_700_000_060, 1) + b"\x01")


def stage():
    def speak(name, rid, ip):
        body = json.dumps({"name": name}).encode()
        return bytes([0, len(body)]) + body + bytes([rid, ip, 0])

    def js(op, obj, long=False):
        body = json.dumps(obj).encode()
        size = struct.pack("<H", len(body)) if long else bytes([len(body)])
        return bytes([op]) + size + body

    seq = (speak("Alice", 1, 0x11) + speak(" Bob ", 2, 0x12) + speak("Carol\u0007", 3, 0x21)
           + bytes([1, 1]) + bytes([2, 2]) + bytes([3, 3]) + bytes([4, 3])
           + js(7, {"open": False}) + speak("Dave", 4, 0x31) + js(7, {"open": True})
           + bytes([12, 1, 0, 1]) + js(8, {"muted": True}) + bytes([1, 1])
           + js(9, {"title": "Morning show", "scheduled_at": 1_700_000_000_000, "private": True}, True)
           + bytes([13, 200, 5, 6, 4, 5]))
    put("stage_json", "session", seq)
    put("stage_json", "crowd", bytes([10]) + struct.pack("<H", 600) + bytes([40]) + struct.pack("<H", 0)
        + speak("Late", 9, 0x55) + bytes([13, 0]) + struct.pack("<Q", 10**9) + bytes([5, 11]))
    put("stage_json", "bad-bodies", js(0, {"name": "x", "extra": 1}) + js(8, {"muted": "yes"})
        + js(9, {"title": "\t"}, True))


OFFER = "\r\n".join([
    "v=0",
    "o=- 5127311947103829021 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS 6c0e3f5a-2b7d-4e1a-9c33-1d2f4a5b6c7d",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1467250027 1 udp 2122260223 192.0.2.10 54321 typ host generation 0 network-id 1",
    "a=ice-ufrag:q7Rv",
    "a=ice-pwd:Yx2mB9kLp4Tn8Wc1Zs6Hd3Fj",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 " + ":".join(f"{(i * 37 + 11) % 256:02X}" for i in range(32)),
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=sendrecv",
    "a=msid:6c0e3f5a-2b7d-4e1a-9c33-1d2f4a5b6c7d 0f9e8d7c-6b5a-4938-8271-605f4e3d2c1b",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:2738271163 cname:Jx4pQ8vN2mLs7Kd1",
    "a=ssrc:2738271163 msid:6c0e3f5a-2b7d-4e1a-9c33-1d2f4a5b6c7d 0f9e8d7c-6b5a-4938-8271-605f4e3d2c1b",
    "",
])


def sdp():
    put("sdp", "chromium-audio", OFFER)
    put("sdp", "chromium-sendonly", OFFER.replace("a=sendrecv", "a=sendonly"))
    video = OFFER.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1") + "\r\n".join([
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:q7Rv",
        "a=ice-pwd:Yx2mB9kLp4Tn8Wc1Zs6Hd3Fj",
        "a=fingerprint:sha-256 " + ":".join(f"{(i * 37 + 11) % 256:02X}" for i in range(32)),
        "a=setup:actpass",
        "a=mid:1",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        "",
    ])
    put("sdp", "chromium-audio-video", video)
    pcmu = OFFER.replace("111 63 9 0 8 13 110 126", "0 8").replace("a=rtpmap:111 opus/48000/2\r\n", "")
    put("sdp", "no-opus", pcmu)


def jitter_pace():
    # jitter: target 40 ms, max 200 ms, steady 20 ms packets with a pop each tick
    steady = bytes([20]) + struct.pack("<H", 200) + struct.pack("<II", 1000, 0)
    for _ in range(30):
        steady += bytes([4 * 3 + 1]) + struct.pack("<H", 2880) + bytes([7])  # push next, 20 ms
        steady += bytes([3, 20, 2])  # 20 ms pass, pop
    put("jitter", "steady", steady)
    burst = bytes([20]) + struct.pack("<H", 200) + struct.pack("<II", 1000, 0)
    burst += (bytes([4 * 3 + 1]) + struct.pack("<H", 2880) + bytes([7])) * 40
    burst += bytes([3, 255, 2, 2, 2, 0]) + struct.pack("<QQ", 5, 2**63) + bytes([8, 3, 0]) + struct.pack("<Q", 2**64 - 5) + bytes([2])
    put("jitter", "burst-and-jumps", burst)
    # pace: monotonic, lead 2 s, catch-up 5 s, 20 ms packets
    pace = bytes([1, 1]) + struct.pack("<HH", 2000, 5000) + struct.pack("<Q", 10_000)
    for k in range(60):
        pace += struct.pack("<H", 20 if k < 30 else 0) + bytes([8])
    put("pace", "real-time-then-burst", pace)
    put("pace", "wild-times", bytes([0, 1]) + struct.pack("<HH", 2000, 5000) + struct.pack("<Q", 0)
        + struct.pack("<Q", 2**62) + bytes([8]) + struct.pack("<Q", 3) + bytes([0]) + struct.pack("<Q", 2**64 - 1))


def opus():
    put("opus", "head-mono", b"OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00")
    tags = b"OpusTags" + struct.pack("<I", 7) + b"tribune" + struct.pack("<I", 1)
    c = b"TRIBUNE_EPOCH_MS=1700000000000"
    put("opus", "tags", tags + struct.pack("<I", len(c)) + c)
    put("opus", "code3", bytes([(16 << 3) | 3, 0x84, 1, 2, 3, 4]))
    put("opus", "code2", bytes([(31 << 3) | 2, 252, 1]) + bytes(300))


if __name__ == "__main__":
    ogg(sys.argv[1:])
    chunked()
    http_heads()
    ranges()
    tokens()
    stage()
    sdp()
    jitter_pace()
    opus()
