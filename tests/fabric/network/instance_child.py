"""A role instance as a real process: binds at once, listens when told, greets and echoes.

    python -m tests.fabric.network.instance_child NAME [--late]

Prints ``bound PORT`` as soon as its port is bound (a connect is refused there until it
listens: a worker role opening its listener in run(), after it reported ReadyRole); with
``--late`` it listens only once it reads a line on stdin. Prints ``listening`` once it listens.
Each connection gets ``NAME\\n``, then its bytes echoed back.
"""

from __future__ import annotations

import socket
import sys
import threading


def _serve(conn: socket.socket, name: str) -> None:
    with conn:
        try:
            conn.sendall(f"{name}\n".encode())
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass


def main() -> None:
    """Bind, report the port, wait if told to, listen, then serve until killed."""
    name, late = sys.argv[1], sys.argv[2:] == ["--late"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(f"bound {sock.getsockname()[1]}", flush=True)
    if late:
        sys.stdin.readline()
    sock.listen(128)
    print("listening", flush=True)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_serve, args=(conn, name), daemon=True).start()


if __name__ == "__main__":
    main()
