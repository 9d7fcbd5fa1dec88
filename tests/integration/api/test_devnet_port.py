"""The devnet's API port check: a port whose only sockets are connections in TIME_WAIT (a
devnet stopped a moment ago) is free; a live listener is not."""

from __future__ import annotations

import socket

import pytest

from devnet.network import check_port_free
from bridge.errors import BridgeError


def _time_wait_port() -> int:
    """A port on 127.0.0.1 whose listener is gone and whose accepted connection, closed by the
    server side first, sits in TIME_WAIT (what Ctrl-C on a devnet with open clients leaves)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    conn.close()  # the server closes first: its side of the connection goes to TIME_WAIT
    listener.close()
    assert client.recv(100)
    client.close()
    return port


def _has_time_wait(port: int) -> bool:
    want = f":{port:04X}"
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f][1:]
    return any(r[1].endswith(want) and r[3] == "06" for r in rows)  # 06 = TIME_WAIT


def test_a_port_in_time_wait_is_free():
    port = _time_wait_port()
    assert _has_time_wait(port)
    check_port_free(port)  # old check: "port N is in use" for about 60 s


@pytest.mark.parametrize("reuse", [False, True])  # the API's own listener sets SO_REUSEADDR
def test_a_live_listener_is_in_use(reuse):
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse))
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(BridgeError) as e:
            check_port_free(port)
    msg = str(e.value)
    assert msg.endswith(f"devnet: port {port} is in use; pass --api-port N (0 = any)") and "\n" not in msg
