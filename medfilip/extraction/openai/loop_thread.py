"""An asyncio producer seen as a plain generator: its event loop runs in a worker thread and hands
each item over through a queue (sync mode's synchronous face)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

__all__ = ["Emit", "Producer", "iterate_in_thread"]

Emit = Callable[[Any], None]
Producer = Callable[[Emit, threading.Event], Coroutine[Any, Any, None]]


class _Raised:
    """An exception of the worker thread, on its way to the consuming thread."""

    def __init__(self, error: BaseException):
        self.error = error


def iterate_in_thread(produce: Producer, *, name: str) -> Iterator[Any]:
    """The items ``produce(emit, stop)`` emits, as they come, from a new event loop in thread ``name``.

    An exception of the producer is raised here (its cancellation is not). If the consumer stops
    early (Ctrl-C, an error), ``stop`` is set, the producer's task cancelled and the thread given
    10 s to end.
    """
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    done = object()
    holder: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(produce(out.put, stop))
            holder["loop"], holder["task"] = loop, task
            loop.run_until_complete(task)
        except BaseException as err:  # noqa: BLE001 - handed to the consuming thread
            out.put(_Raised(err))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                out.put(done)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            try:
                item = out.get(timeout=0.25)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            if item is done:
                finished = True
                break
            if isinstance(item, _Raised):
                if isinstance(item.error, asyncio.CancelledError):
                    continue
                raise item.error
            yield item
    finally:
        if not finished:  # the consumer stopped early (Ctrl-C, an error): stop the requests in flight
            stop.set()
            loop, task = holder.get("loop"), holder.get("task")
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):  # the loop already closed
                    loop.call_soon_threadsafe(task.cancel)
            thread.join(timeout=10)
