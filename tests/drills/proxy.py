"""A TCP proxy on loopback the drill controls: pass, drop (cut every connection and refuse
new ones) or stall (forward nothing, in either direction, until passed again: a network
that silently loses packets, then heals, as TCP retransmission would)."""
import select
import socket
import threading


class TcpProxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.mode = "pass"
        self.lock = threading.Lock()
        self.pairs = []
        self.closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode):
        assert mode in ("pass", "drop", "stall")
        with self.lock:
            self.mode = mode
            if mode == "drop":
                for a, b in self.pairs:
                    for s in (a, b):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        s.close()
                self.pairs = []

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode == "drop":
                c.close()
                continue
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.pairs.append((c, u))
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, a, b):
        peer = {a: b, b: a}
        try:
            while not self.closed:
                if self.mode == "stall":
                    select.select([], [], [], 0.1)
                    continue
                r, _, _ = select.select([a, b], [], [], 0.1)
                if self.mode != "pass":
                    continue
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peer[s].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            with self.lock:
                if (a, b) in self.pairs:
                    self.pairs.remove((a, b))
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.ls.close()
        self.set("drop")
