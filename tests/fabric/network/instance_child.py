"""A role instance as a real process: binds at once, listens after a delay, greets and echoes.

    python -m tests.fabric.network.instance_child NAME DELAY

Prints ``bound PORT`` as soon as its port is bound (a connect is refused there until it
listens: a worker role opening its listener in run(), after it reported ReadyRole), then
``listening`` once it listens. Each connection gets ``NAME\\n``, then its bytes echoed back.
"""

from __future__ import annotations

import socket
import sys
import threading
import time


def _serve(conn: socket.socket, name: str) -> None:
    with conn:
        try:
            conn.sendall(f"{name}\n".encode())
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass


def main() -> None:
    """Bind, report the port, wait, listen, then serve until killed."""
    name, delay = sys.argv[1], float(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(f"bound {sock.getsockname()[1]}", flush=True)
    time.sleep(delay)
    sock.listen(128)
    print("listening", flush=True)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_serve, args=(conn, name), daemon=True).start()


if __name__ == "__main__":
    main()
