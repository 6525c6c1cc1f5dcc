#!/usr/bin/env python3
"""A client of the JSON-header application protocol, as the Python socket tutorial's app-client
speaks it: a 2-byte big-endian header length, a JSON header (byteorder, content-type,
content-encoding, content-length), then the content. It sends one text/json request and prints
what the response's content type says it is: the decoded JSON result, or raw bytes.

usage: app_client.py HOST PORT ACTION VALUE
"""
import json
import socket
import struct
import sys

from stream_util import recv_exact


def main():
    host, port, action, value = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    content = json.dumps({"action": action, "value": value}, ensure_ascii=False).encode("utf-8")
    header = json.dumps({
        "byteorder": sys.byteorder,
        "content-type": "text/json",
        "content-encoding": "utf-8",
        "content-length": len(content),
    }, ensure_ascii=False).encode("utf-8")
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(struct.pack(">H", len(header)) + header + content)
        (header_len,) = struct.unpack(">H", recv_exact(sock, 2))
        reply_header = json.loads(recv_exact(sock, header_len).decode("utf-8"))
        body = recv_exact(sock, reply_header["content-length"])
    if reply_header["content-type"] == "text/json":
        result = json.loads(body.decode(reply_header["content-encoding"]))
        print("got result: %s" % result.get("result"))
    else:
        print("got response: %r" % body)


if __name__ == "__main__":
    main()
