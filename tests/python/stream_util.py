"""What the Python peers of the test suites share."""


def recv_exact(sock, n):
    """Reads exactly n bytes from a socket (plain or TLS); EOFError when it closes first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("the server closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data
