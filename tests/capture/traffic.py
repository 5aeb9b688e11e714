"""Test traffic with known byte counts, run inside network namespaces (`ip netns exec`).

server: listens on HOST at each PORT; per connection reads until it has the
        expected request bytes, sends the reply, then closes as told.
client: one connection per PORT, sends/receives the given sizes, prints JSON.
Each connection's sizes are in a JSON plan: [{"port", "up", "down", "server_closes_first"}].
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time


def _recv_exact(sock: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        chunk = sock.recv(min(1 << 16, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def _drain(sock: socket.socket) -> int:
    got = 0
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return got
        got += len(chunk)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(host: str, plan: list[dict]) -> list[dict]:
    """Serve each planned connection; return each one's retransmits as its own kernel counted them."""
    results: dict[int, int] = {}

    def one(item: dict, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            _recv_exact(conn, item["up"])
            conn.sendall(b"d" * item["down"])
            if not item.get("server_closes_first"):
                _drain(conn)
            results[item["port"]] = tcp_total_retrans(conn)

    threads = []
    for item in plan:
        listener = socket.socket(_family(host), socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, item["port"]))
        listener.listen()
        t = threading.Thread(target=one, args=(item, listener), daemon=True)
        t.start()
        threads.append(t)
    print("ready", flush=True)
    for t in threads:
        t.join()
    return [{"port": item["port"], "retransmits": results.get(item["port"])} for item in plan]


# struct tcp_info (include/uapi/linux/tcp.h): u32 tcpi_unacked at byte 24, u32 tcpi_total_retrans at 100
_TCP_INFO_LEN = 232
_TI_UNACKED = 24
_TI_TOTAL_RETRANS = 100
_ACK_WAIT_S = 10.0


def tcp_total_retrans(sock: socket.socket) -> int:
    """The socket's total retransmits once all it sent is acknowledged (or after _ACK_WAIT_S).

    Read before that, a loaded machine's late retransmits of data still in flight would be
    missing from this count though the kernel (and so the sidecar) counts them.
    """
    deadline = time.monotonic() + _ACK_WAIT_S
    while True:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        if struct.unpack_from("=I", info, _TI_UNACKED)[0] == 0 or time.monotonic() > deadline:
            return struct.unpack_from("=I", info, _TI_TOTAL_RETRANS)[0]
        time.sleep(0.005)


def client(host: str, plan: list[dict], *, chunk_delay_s: float = 0.0, chunks: int = 1) -> list[dict]:
    out = []
    for item in plan:
        sock = socket.create_connection((host, item["port"]), timeout=60)
        per = item["up"] // chunks
        sent = 0
        for i in range(chunks):
            n = per if i < chunks - 1 else item["up"] - sent
            sock.sendall(b"u" * n)
            sent += n
            if chunk_delay_s:
                time.sleep(chunk_delay_s)
        got = _recv_exact(sock, item["down"])
        if item.get("server_closes_first"):
            _drain(sock)
        retrans = tcp_total_retrans(sock)
        sock.close()
        out.append({"port": item["port"], "up": sent, "down": got, "retransmits": retrans})
    return out


def hold_server(host: str, port: int, n: int) -> None:
    """Accept ``n`` connections on one port, then wait for each to close."""
    listener = socket.socket(_family(host), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(n)
    print("ready", flush=True)
    conns = [listener.accept()[0] for _ in range(n)]
    for conn in conns:
        _drain(conn)
        conn.close()


def hold_client(host: str, port: int, n: int, hold_s: float) -> list[dict]:
    """Open ``n`` connections at once, send 1 byte on each, hold them ``hold_s``, close all."""
    socks = [socket.create_connection((host, port), timeout=60) for _ in range(n)]
    for sock in socks:
        sock.sendall(b"u")
    time.sleep(hold_s)
    for sock in socks:
        sock.close()
    return [{"port": port, "connections": n}]


if __name__ == "__main__":
    mode, host = sys.argv[1], sys.argv[2]
    if mode == "hold-server":
        hold_server(host, int(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    if mode == "hold-client":
        print(json.dumps(hold_client(host, int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))), flush=True)
        sys.exit(0)
    plan_json = sys.argv[3]
    plan = json.loads(plan_json)
    if mode == "server":
        print(json.dumps(serve(host, plan)), flush=True)
    else:
        delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
        chunks = int(sys.argv[5]) if len(sys.argv) > 5 else 1
        print(json.dumps(client(host, plan, chunk_delay_s=delay, chunks=chunks)), flush=True)
