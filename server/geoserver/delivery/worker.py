"""The delivery loop: at-least-once, in order per hook, retried with backoff; run only by the leader.

One dispatcher task hands hooks that have events to at most CONCURRENCY drain tasks, one per
hook. A drain sends its hook's events oldest first, each to the hook's endpoints in order (the
next one when one fails, Tile38's failover list), every send bounded by `hook-timeout`; an event
is removed from the queue only after an endpoint took it. When every endpoint fails, the hook
waits `policy.retry_delay` before the same event is tried again (later events wait behind it:
order is kept), and its slot goes to another hook meanwhile, so hooks whose endpoints are down
never hold up the others. Sending runs in these tasks, never in a write command: the writes'
only cost is the enqueue (queue.py).

`pause()` (this server became a follower) cancels every send: an event cut off mid-send stays
queued and is sent again when the server leads again, which is where "at least once" can mean
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Callable

from geoserver.delivery.endpoints import EndpointError, Sender, load_kind, open_sender, parse_endpoint
from geoserver.delivery.endpoints.urls import redact
from geoserver.delivery.policy import IDLE_CLOSE, expired, retry_delay
from geoserver.delivery.queue import Event, HookQueue
from geoserver.delivery.stats import DeliveryStats

log = logging.getLogger(__name__)

CONCURRENCY = 64  # hooks delivering at the same time
BATCH = 16  # events read from the queue per hook at a time
TICK = 1.0  # the dispatcher looks at due retries and idle connections at least this often


class DeliveryWorker:
    def __init__(self, queue: HookQueue, stats: DeliveryStats, timeout: Callable[[], float],
                 max_age: Callable[[], float], rand: Callable[[], float] = random.random) -> None:
        self.queue, self.stats = queue, stats
        self.timeout, self.max_age, self.rand = timeout, max_age, rand
        self.running = False
        self._task: asyncio.Task | None = None
        self._preload: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        # hooks that may have events to send now, oldest first (a dict as an ordered set: the
        # dispatcher takes from the front without walking the rest, fair with 70k hooks)
        self._ready: dict[str, None] = {}
        self._active: dict[str, asyncio.Task] = {}
        self._retries: list[tuple[float, str]] = []  # heap of (monotonic due time, hook)
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._senders: dict[str, tuple[Sender, float]] = {}  # url -> (sender, last used)
        self._down: dict[str, tuple[int, float]] = {}  # url -> (failures in a row, skip until)
        self._unusable: set[str] = set()  # URLs parse_endpoint refuses (kinds not built, ...)
        queue.on_enqueue = self._enqueued

    # --- role ---------------------------------------------------------------------------
    def start(self) -> None:
        """Deliver (this server is the leader). Idempotent."""
        if self.running:
            return
        self.running = True
        self._wake = asyncio.Event()
        self._ready = dict.fromkeys(self.queue.hooks_with_events())
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="hook-delivery")
        self._preload = loop.create_task(load_kind("http"), name="hook-preload")  # the common kind
        log.info("hook delivery started", extra={"queued": self.queue.depth(), "hooks": len(self._ready)})

    def pause(self) -> None:
        """Stop delivering (this server became a follower); the queue is kept. Idempotent."""
        if not self.running:
            return
        self.running = False
        for task in (self._task, *self._active.values()):
            if task is not None:
                task.cancel()
        self._retries.clear()
        self._retry_at.clear()
        self._failures.clear()
        log.info("hook delivery stopped", extra={"queued": self.queue.depth()})

    async def close(self) -> None:
        """Stop and wait for the tasks and connections to end (server shutdown)."""
        tasks = [t for t in (self._task, *self._active.values()) if t is not None]
        self.pause()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_senders(list(self._senders))

    def forget(self, hook: str) -> None:
        """The hook was deleted: stop its sends now."""
        task = self._active.pop(hook, None)
        if task is not None:
            task.cancel()
        self._ready.pop(hook, None)
        self._retry_at.pop(hook, None)
        self._failures.pop(hook, None)

    # --- dispatch -----------------------------------------------------------------------
    def _enqueued(self, hook: str) -> None:
        if self.running and self._wake is not None:
            self._ready[hook] = None
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        try:
            while self.running:
                self._wake.clear()
                now = time.monotonic()
                self._due_retries(now)
                self._dispatch()
                await self._close_senders([url for url, (_, used) in self._senders.items()
                                           if now - used > IDLE_CLOSE])
                wait = TICK if not self._retries else max(0.0, min(TICK, self._retries[0][0] - now))
                with contextlib.suppress(TimeoutError):  # not wait_for: 3.11's can swallow a cancel
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            await self._close_senders(list(self._senders))

    def _due_retries(self, now: float) -> None:
        while self._retries and self._retries[0][0] <= now:
            due, hook = heapq.heappop(self._retries)
            if self._retry_at.get(hook) == due:
                del self._retry_at[hook]
                self._ready[hook] = None

    def _dispatch(self) -> None:
        while self._ready and len(self._active) < CONCURRENCY:
            hook = next(iter(self._ready))
            del self._ready[hook]
            if hook in self._active or hook in self._retry_at or not self.queue.counts.get(hook):
                continue  # an active drain reads new events itself; a due retry re-adds the hook
            task = asyncio.get_running_loop().create_task(self._drain(hook), name=f"hook-drain:{hook}")
            self._active[hook] = task
            task.add_done_callback(lambda t, h=hook: self._drained(h, t))

    def _drained(self, hook: str, task: asyncio.Task) -> None:
        if self._active.get(hook) is task:
            del self._active[hook]
        if not task.cancelled() and task.exception() is not None:
            log.error("hook delivery task failed", exc_info=task.exception(), extra={"hook": hook})
            self._schedule_retry(hook)
        if self.running and self._wake is not None:
            if hook not in self._retry_at and self.queue.counts.get(hook):
                self._ready[hook] = None  # events queued while the drain was finishing
            self._wake.set()  # its slot is free for another hook

    def _schedule_retry(self, hook: str) -> float:
        failures = self._failures[hook] = self._failures.get(hook, 0) + 1
        delay = retry_delay(failures, 0.5 + 0.5 * self.rand())
        due = time.monotonic() + delay
        self._retry_at[hook] = due
        heapq.heappush(self._retries, (due, hook))
        return delay

    # --- sending ------------------------------------------------------------------------
    async def _drain(self, hook: str) -> None:
        after = 0
        while self.running:
            batch = self.queue.head(hook, after, BATCH)
            if not batch:
                return
            for event in batch:
                after = event.seq
                if not self.queue.is_live(event):
                    continue  # dropped (overflow, forget) after it was read
                if expired(event.queued_at, time.time(), self.max_age()):
                    self.queue.ack(event)
                    self.stats.dropped(hook, "expired")
                    continue
                sent = await self._send(event)
                if not sent and all(url in self._unusable for url in event.endpoints):
                    self.queue.ack(event)  # can never be sent: retrying would only fill the queue
                    self.stats.dropped(hook, "unusable")
                    continue
                if not sent:
                    self.stats.failed(hook)
                    delay = self._schedule_retry(hook)
                    log.debug("hook delivery retry", extra={"hook": hook, "seq": event.seq,
                                                            "failures": self._failures[hook],
                                                            "retry_in": round(delay, 3)})
                    return
                self._failures.pop(hook, None)
                self.queue.ack(event)
                self.stats.sent(hook, max(0.0, time.time() - event.queued_at))

    async def _send(self, event: Event) -> bool:
        """True once one endpoint of the event took it, trying them in order. An endpoint that
        just failed is skipped, while a later one is left, until its own retry delay passed
        (so a dead primary costs one attempt per delay, not one timeout per event)."""
        last = len(event.endpoints) - 1
        for i, url in enumerate(event.endpoints):
            down = self._down.get(url)
            if url in self._unusable or (down is not None and i < last and time.monotonic() < down[1]):
                continue
            try:
                sender = await self._sender(url)
                async with asyncio.timeout(self.timeout()):
                    await sender.send(event.payload)
            except asyncio.CancelledError:
                raise
            except EndpointError:
                continue  # unusable: logged once by _sender
            except Exception as exc:  # any failure of any client library: try the next endpoint
                failures = (down[0] if down else 0) + 1
                skip = retry_delay(failures, 0.5 + 0.5 * self.rand())
                self._down[url] = (failures, time.monotonic() + skip)
                if down is None:  # logged when an endpoint starts failing, not at every retry
                    log.warning("hook endpoint failed", extra={
                        "hook": event.hook, "endpoint": redact(url), "error": _describe(exc)})
                await self._close_senders([url])
                continue
            if down is not None:
                del self._down[url]
                log.info("hook endpoint recovered", extra={"endpoint": redact(url), "failures": down[0]})
            return True
        return False

    async def _sender(self, url: str) -> Sender:
        entry = self._senders.get(url)
        if entry is None:
            try:
                endpoint = parse_endpoint(url)
                await load_kind(endpoint.kind)  # the client library, imported off the loop
                entry = self._senders.get(url)  # another hook may have opened it meanwhile
                sender = entry[0] if entry is not None else open_sender(endpoint, self.timeout())
            except EndpointError as exc:  # e.g. a Tile38 AOF's kafka:// hook: never retried
                self._unusable.add(url)
                log.warning("hook endpoint unusable: its events are dropped",
                            extra={"endpoint": redact(url), "error": str(exc)})
                raise
        else:
            sender = entry[0]
        self._senders[url] = (sender, time.monotonic())
        return sender

    async def _close_senders(self, urls: list[str]) -> None:
        for url in urls:
            entry = self._senders.pop(url, None)
            if entry is None:
                continue
            try:
                async with asyncio.timeout(self.timeout()):
                    await entry[0].close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a connection that cannot close cleanly is dropped anyway
                log.debug("endpoint close failed", extra={"endpoint": redact(url), "error": _describe(exc)})


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return "timed out" if isinstance(exc, TimeoutError) else text
