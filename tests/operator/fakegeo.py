"""A tiny stand-in for geoserver, speaking only the operator's probe contract.

Used only while the real ``geoserver`` is not runnable (it is being written concurrently);
the e2e tests prefer the real server. It is a separate process bound to its own loopback
address, exactly like a pod. Contract: RESP in, and after ``OUTPUT json`` JSON replies
``{"ok":true,...}``/``{"ok":false,"err":...}``; SERVER stats, AOFSHRINK and RESYNC run in the
background; a follower polls its leader's SERVER and copies its aof_size. Test-only command
``FAKE DIVERGE <n>`` makes a follower report a fixed, wrong aof_size while claiming caught up
(the Tile38 1.30 seed); ``FAKE HEAL`` undoes it; ``FAKE SET <n>`` sets a leader's aof_size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import hiredis
import orjson


class Fake:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.aof_size = 1000 if not args.follow else 0
        self.following = args.follow
        self.caught_up = False
        self.shrinking = False
        self.resyncs = 0
        self.diverged: int | None = None
        self.last_shrink_time, self.last_shrink_result = 0.0, ""

    def stats(self) -> dict:
        s = {
            "id": f"fake-{os.getpid()}", "aof_size": self.diverged or self.aof_size,
            "num_objects": 0, "num_collections": 0, "mem_alloc": 0, "heap_size": 0,
            "pid": os.getpid(), "version": "fake", "read_only": bool(self.following),
            "aof_shrinking": self.shrinking, "last_shrink_time": self.last_shrink_time,
            "last_shrink_result": self.last_shrink_result, "last_shrink_duration_ms": 1.0,
            "resyncs": self.resyncs,
        }  # fmt: skip
        if self.following:
            s |= {"following": self.following, "caught_up": self.caught_up,
                  "caught_up_once": True, "leader_aof_size": self.aof_size}  # fmt: skip
        return s

    async def shrink(self) -> None:
        await asyncio.sleep(0.3)
        self.aof_size = max(100, self.aof_size // 2)
        self.last_shrink_time, self.last_shrink_result = time.time(), "ok"
        self.shrinking = False

    async def resync(self) -> None:
        await asyncio.sleep(0.3)
        self.resyncs += 1
        self.caught_up = await self.pull()

    async def pull(self) -> bool:
        host, port = self.following.rsplit(":", 1)
        try:
            r, w = await asyncio.open_connection(host, int(port))
            w.write(b"*2\r\n$6\r\nOUTPUT\r\n$4\r\njson\r\n*1\r\n$6\r\nSERVER\r\n")
            reader = hiredis.Reader()
            replies: list = []
            while len(replies) < 2:
                reader.feed(await r.read(65536))
                while (x := reader.gets()) is not False:
                    replies.append(x)
            w.close()
            self.aof_size = orjson.loads(replies[1])["stats"]["aof_size"]
            return True
        except (OSError, ValueError, KeyError):
            return False

    async def follow_loop(self) -> None:
        while True:
            if self.following and self.caught_up is not None:
                ok = await self.pull()
                self.caught_up = ok
            await asyncio.sleep(0.1)

    def handle(self, cmd: list[str]) -> dict:
        name = cmd[0].upper()
        if name == "SERVER":
            return {"ok": True, "stats": self.stats()}
        if name in ("HEALTHZ", "PING", "AUTH"):
            return {"ok": True}
        if name == "AOFSHRINK":
            if not self.shrinking:
                self.shrinking = True
                asyncio.get_running_loop().create_task(self.shrink())
            return {"ok": True}
        if name == "RESYNC":
            if not self.following:
                return {"ok": False, "err": "not a follower"}
            self.caught_up = False
            asyncio.get_running_loop().create_task(self.resync())
            return {"ok": True}
        if name == "FOLLOW":
            self.following = None if cmd[1].lower() == "no" else f"{cmd[1]}:{cmd[2]}"
            return {"ok": True}
        if name == "FAKE":
            sub = cmd[1].upper()
            if sub == "DIVERGE":
                self.diverged = int(cmd[2])
            elif sub == "HEAL":
                self.diverged = None
            elif sub == "SET":
                self.aof_size = int(cmd[2])
            return {"ok": True}
        return {"ok": False, "err": f"unknown command '{cmd[0]}'"}

    async def client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        reader, json_mode = hiredis.Reader(encoding="utf-8"), False
        try:
            while data := await r.read(65536):
                reader.feed(data)
                while (cmd := reader.gets()) is not False:
                    if cmd[0].upper() == "OUTPUT":
                        json_mode = True
                        w.write(b'$11\r\n{"ok":true}\r\n')
                        continue
                    body = orjson.dumps(self.handle(cmd))
                    w.write(b"$%d\r\n%s\r\n" % (len(body), body) if json_mode else b"+OK\r\n")
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9851)
    p.add_argument("--dir", default=".")
    p.add_argument("--follow", default=None)
    args, _ = p.parse_known_args()
    fake = Fake(args)
    server = await asyncio.start_server(fake.client, args.host, args.port)
    asyncio.get_running_loop().create_task(fake.follow_loop())
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
