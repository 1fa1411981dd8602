"""A scripted stand-in for a leader: the attacker of `FOLLOW attacker 9851`. It answers the
follower's handshake like an empty leader (JSON replies) and records every command it gets;
`server_reply` replaces its SERVER reply and `stream` is sent after the `+OK` of `AOF pos`,
so a test can put hostile bytes exactly where a follower parses them."""

from __future__ import annotations

import contextlib
import socket
import threading

import hiredis
import orjson


class FakeLeader:
    def __init__(self, server_reply: bytes | None = None, stream: bytes | None = None) -> None:
        self.server_reply = server_reply
        self.stream = stream
        self.commands: list[list[bytes]] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = hiredis.Reader()
        with contextlib.suppress(OSError), conn:
            while data := conn.recv(65536):
                reader.feed(data)
                while (cmd := reader.gets()) is not False:
                    self.commands.append(cmd)
                    conn.sendall(self._reply(cmd[0].upper()))

    def _reply(self, name: bytes) -> bytes:
        if name == b"SERVER" and self.server_reply is not None:
            return self.server_reply
        if name == b"AOF" and self.stream is not None:
            return b"+OK\r\n" + self.stream
        doc: dict = {"ok": True}
        if name == b"SERVER":
            aof_size = 1 << 20 if self.stream is not None else 0
            doc["stats"] = {"id": "attacker", "aof_size": aof_size, "num_objects": 0}
        body = orjson.dumps(doc)
        return b"$%d\r\n%s\r\n" % (len(body), body)

    def close(self) -> None:
        self.listener.close()
