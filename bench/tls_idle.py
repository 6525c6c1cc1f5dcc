#!/usr/bin/env python3
"""tls_idle.py: memory per idle TLS connection of a TLS echo server.

    tls_idle.py --cert FILE --key FILE [--count N] [--settle S] -- SERVER [ARGS...]

Starts SERVER ARGS... (it must print "listening on HOST:PORT" first, as
examples/echo_server and bench/uv_tls_echo_server do), reads its VmRSS, opens N TLS
connections to it (default 2000; each completes its handshake and sends one byte that the
server echoes, so every connection has been used once), waits the settle time (default 2 s),
reads VmRSS again, and prints one line:
    conns=N rss_before_kib=... rss_after_kib=... per_conn_kib=...
The connections are held, never closed, until the measurement is done. Loopback only.
Exit status 0 when all N connections came up and echoed.
"""
import argparse
import asyncio
import os
import resource
import ssl
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_all(host, port, count, ctx, concurrency=128):
    sem = asyncio.Semaphore(concurrency)
    conns = []

    async def one():
        async with sem:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx), timeout=20)
            w.write(b"x")
            await w.drain()
            got = await asyncio.wait_for(r.readexactly(1), timeout=20)
            if got != b"x":
                raise RuntimeError("wrong echo")
            conns.append((r, w))

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    errors = [e for e in results if isinstance(e, BaseException)]
    return conns, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("server", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.server[1:] if a.server and a.server[0] == "--" else a.server
    if not cmd:
        ap.error("no server command")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: resource.setrlimit(
                               resource.RLIMIT_NOFILE, (hard, hard)))
    try:
        line = srv.stdout.readline()
        if not line.startswith("listening on "):
            print(f"tls_idle: the server did not listen: {line!r} {srv.stderr.read(500)!r}",
                  file=sys.stderr)
            return 1
        hostport = line.split()[2]
        host, port = hostport.rsplit(":", 1)
        host = host.strip("[]")
        time.sleep(0.3)
        before = rss_kib(srv.pid)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(a.cert)
        ctx.check_hostname = False  # the bench certificate names 127.0.0.1 only
        loop = asyncio.new_event_loop()
        conns, errors = loop.run_until_complete(open_all(host, int(port), a.count, ctx))
        time.sleep(a.settle)
        after = rss_kib(srv.pid)
        ok = not errors and len(conns) == a.count
        per = (after - before) / max(len(conns), 1)
        print(f"conns={len(conns)} failed={len(errors)} rss_before_kib={before} "
              f"rss_after_kib={after} per_conn_kib={per:.1f}")
        if errors:
            print(f"tls_idle: first error: {errors[0]!r}", file=sys.stderr)
        for _, w in conns:
            w.transport.abort()
        loop.close()
        return 0 if ok else 1
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=5)
        except subprocess.TimeoutExpired:
            srv.kill()


if __name__ == "__main__":
    sys.exit(main())
