"""What ends a TCP connection whose network silently drops every packet? (docs/RELIABILITY.md)

Run as root: `unshare -n /usr/bin/python3 tests/drills/tcpstall.py`. In a private network
namespace (nothing outside it is touched), five client connections to a local listener, then
loopback is taken down: every packet is dropped, nothing is closed or refused, as in a
partition. For each combination of socket options, with a request sent and unanswered
("query sent") or nothing outstanding ("idle"), it prints when the client's socket failed.
This is the kernel's behaviour that pg.c's choices rest on (PostgreSQL's connections use
the same options through libpq's keepalives* and tcp_user_timeout)."""
import select
import socket
import subprocess
import threading
import time

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
KEEPALIVE = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1),
             (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1), (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)]
USER_TIMEOUT = [(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 3000)]
CASES = {"no options, query sent": ([], True),
         "keepalives 1 s + 3 x 1 s, query sent": (KEEPALIVE, True),
         "keepalives 1 s + 3 x 1 s, idle": (KEEPALIVE, False),
         "tcp_user_timeout 3 s, query sent": (USER_TIMEOUT, True),
         "tcp_user_timeout 3 s, idle": (USER_TIMEOUT, False)}
LIMIT = 25


def main():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    socks = {}
    for name, (opts, _) in CASES.items():
        c = socket.create_connection(ls.getsockname())
        socks[name] = (c, ls.accept()[0])
        for level, opt, v in opts:
            c.setsockopt(level, opt, v)
    subprocess.run(["ip", "link", "set", "lo", "down"], check=True)  # every packet dropped
    t0 = time.time()
    result = {}

    def watch(name, c, send):
        if send:
            c.send(b"Q" * 100)  # a statement the silent server never answers
        while time.time() - t0 < LIMIT:
            if select.select([c], [], [], 0.2)[0]:
                try:
                    c.recv(10)
                    result[name] = f"closed after {time.time() - t0:.1f} s"
                except OSError as e:
                    result[name] = f"failed after {time.time() - t0:.1f} s: {e.strerror}"
                return
        result[name] = f"nothing within {LIMIT} s"

    threads = [threading.Thread(target=watch, args=(n, socks[n][0], CASES[n][1])) for n in CASES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in CASES:
        print(f"{name}: {result[name]}")


if __name__ == "__main__":
    main()
