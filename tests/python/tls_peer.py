#!/usr/bin/env python3
"""TLS peers built on Python's ssl module, for the interop suite. Each prints what it saw as one
JSON object on the last line of stdout and exits 0 when the peer behaved as TLS says.

usage: tls_peer.py client HOST PORT CAFILE MESSAGE [ALPN,...] [--resume]
         connects, verifies the server against CAFILE and HOST, sends MESSAGE, reads its echo,
         then unwraps: sends close_notify and waits for the server's. --resume: then again,
         offering the first connection's session.
       tls_peer.py server HOST CERTFILE KEYFILE [ALPN,...] [--garbage]
         listens on HOST, port chosen by the OS, prints "listening on HOST:PORT" (IPv6 in
         brackets) first, serves one client: echoes until its close_notify, answers with one.
         --garbage: after the first echo, writes bytes that are no TLS record instead.
       tls_peer.py garbage HOST PORT CAFILE [--at-once]
         completes the handshake, then (after one echoed line, unless --at-once) writes bytes
         that are no TLS record straight to the socket and reads until the server hangs up.
"""
import json
import os
import socket
import ssl
import sys

from stream_util import recv_exact

TIMEOUT = 5
# Not a record: content type 'G' (0x47) and a version no TLS has. Written to the descriptor
# itself (wrap_socket took the socket over), past the TLS layer.
GARBAGE = b"GET / HTTP/1.0\r\n\r\n" * 4


def report(**fields):
    print(json.dumps(fields), flush=True)


def alpn_list(arg):
    return [p for p in arg.split(",") if p] if arg else []


def session_fields(tls):
    return {
        "version": tls.version(),
        "cipher": tls.cipher()[0],
        "alpn": tls.selected_alpn_protocol(),
    }


def client_context(cafile, alpn):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    ctx.load_verify_locations(cafile=cafile)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def client(host, port, cafile, message, alpn="", *flags):
    ctx = client_context(cafile, alpn_list(alpn))
    data = message.encode("utf-8")
    runs = []
    session = None
    for _ in range(2 if "--resume" in flags else 1):
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw:
            tls = ctx.wrap_socket(raw, server_hostname=host, suppress_ragged_eofs=False,
                                  session=session)
            tls.sendall(data)
            echo = recv_exact(tls, len(data))
            # TLS 1.3 tickets come after the handshake: read with the echo, they are in.
            session = tls.session
            runs.append(dict(echo=echo.decode("utf-8"), resumed=tls.session_reused,
                             **session_fields(tls)))
            # unwrap() returns once the server's close_notify is in: a clean end on both sides.
            tls.unwrap()
    report(clean_close=True, runs=runs, **runs[-1])


def server(host, certfile, keyfile, alpn="", *flags):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    protocols = alpn_list(alpn)
    if protocols:
        ctx.set_alpn_protocols(protocols)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen(1)
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        shown = "[%s]" % host if family == socket.AF_INET6 else host
        print("listening on %s:%d" % (shown, port), flush=True)
        raw, _ = listener.accept()
        raw.settimeout(TIMEOUT)
        with raw:
            tls = ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
            fields = session_fields(tls)
            served = 0
            clean = False
            while True:
                try:
                    chunk = tls.recv(65536)
                except ssl.SSLZeroReturnError:
                    chunk = b""
                if not chunk:
                    # recv() returns nothing only for a close_notify; a bare FIN raises
                    # SSLEOFError, which fails the run.
                    clean = True
                    break
                served += len(chunk)
                tls.sendall(chunk)
                if "--garbage" in flags:
                    os.write(tls.fileno(), GARBAGE)
                    ended, seen = read_to_end(tls)
                    report(served=served, ended=ended, after_garbage=seen, **fields)
                    return
            tls.unwrap()
    report(served=served, clean_close=clean, **fields)


def read_to_end(tls):
    """Reads until the peer hangs up. How it did ("eof", "alert: REASON" or "socket: ..."),
    and how many plaintext bytes came before."""
    seen = 0
    try:
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                return "eof", seen
            seen += len(chunk)
    except ssl.SSLError as e:
        return "alert: " + (e.reason or str(e)), seen
    except OSError as e:
        return "socket: " + str(e), seen


def garbage(host, port, cafile, *flags):
    ctx = client_context(cafile, [])
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as raw:
        tls = ctx.wrap_socket(raw, server_hostname=host, suppress_ragged_eofs=False)
        echoed = ""
        if "--at-once" not in flags:
            tls.sendall(b"first a good line\n")
            echoed = recv_exact(tls, len(b"first a good line\n")).decode("utf-8")
        os.write(tls.fileno(), GARBAGE)
        ended, seen = read_to_end(tls)
    report(echo=echoed, ended=ended, after_garbage=seen)


def main():
    modes = {"client": client, "server": server, "garbage": garbage}
    if len(sys.argv) < 2 or sys.argv[1] not in modes:
        print(__doc__, file=sys.stderr)
        return 2
    modes[sys.argv[1]](*sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
