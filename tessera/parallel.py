"""Batches of work on a local process pool or a Dask cluster, for sweeps and fuzz campaigns.

:func:`run_batches` calls ``fn(batch, *args)`` for every batch and hands each result to
``done`` as it arrives (in completion order). Workers ignore Ctrl-C and SIGTERM: the calling
process stops them, so an interrupted run stops within a second and keeps what ``done`` saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["SchedulerError", "run_batches"]


class SchedulerError(ValueError):
    """A Dask scheduler that is malformed or cannot be reached."""


def _worker_init() -> None:
    """Pool workers leave interruption to the parent process, which stops them."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run_batches(fn: Callable, batches: Sequence, done: Callable[[Any], None], *args: Any,
                jobs: int = 1, scheduler: Any = None) -> None:
    """``done(fn(batch, *args))`` for every batch: in this process (``jobs`` 1 or one batch),
    on ``jobs`` pool workers, or on the Dask ``scheduler`` (an address or a Client)."""
    if scheduler is not None:
        _run_dask(scheduler, fn, batches, done, args)
    elif jobs == 1 or len(batches) <= 1:
        for b in batches:
            done(fn(b, *args))
    else:
        _run_pool(jobs, fn, batches, done, args)


def _run_pool(jobs: int, fn: Callable, batches: Sequence, done: Callable, args: tuple) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # forkserver: workers start clean (torch and threads in the parent are not forked)
    ctx = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init)
    try:
        futures = [pool.submit(fn, b, *args) for b in batches]
        for f in as_completed(futures):
            done(f.result())
    except BaseException:
        # Interrupted (or a batch failed): the workers stop now.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _run_dask(scheduler: Any, fn: Callable, batches: Sequence, done: Callable,
              args: tuple) -> None:
    from dask.distributed import Client, as_completed

    if isinstance(scheduler, Client):
        client = scheduler
    else:
        if not isinstance(scheduler, str) or "://" not in scheduler:
            raise SchedulerError(f"a Dask scheduler address looks like tcp://host:8786, not "
                                 f"{scheduler!r}")
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as e:
            raise SchedulerError(f"cannot reach the Dask scheduler at {scheduler}: {e}") \
                from None
    futures = []
    try:
        futures = client.map(fn, batches, *[[a] * len(batches) for a in args], pure=False)
        for f in as_completed(futures):
            done(f.result())
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        if client is not scheduler:
            client.close()
