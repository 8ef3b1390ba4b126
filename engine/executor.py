"""One executor for independent units of work (a case, a model, a setting, a programming), on Dask.

Batch prediction, `aimc evaluate` and the report's measurements hand their units to `Executor.map`,
which runs them in this process (`workers=0`), on a local Dask cluster of worker processes with one
thread each (the default, sized to the machine), or on an existing cluster (`scheduler`). A unit
ships names and settings, never networks or analog tiles: each worker builds what it needs and keeps
it across units in its own process (`local_model`, `local_chips`), so a model is read and its chips
programmed once per worker. Each worker pins torch to its share of its host's cores.

A worker that dies takes its running unit with it; Dask reruns that unit on another worker (and on a
restarted one), so units must be idempotent: write outputs as one output set (`engine.files.OutputSet`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

if TYPE_CHECKING:
    from distributed import Worker

    from engine.analog.chips import ChipCache
    from engine.model_store import ModelSpec

Item = TypeVar("Item")
Progress = Callable[[dict], None]  # a unit's progress message (plain data) to whoever runs the batch

CHIP_SETS_PER_WORKER = 4  # chip sets kept per worker: a few (model, settings, programming) at once
CONNECT_TIMEOUT_S = 20

_torch_threads: int | None = None  # this process's share of its host's cores, once a worker plugin set it
_chips: ChipCache | None = None
_chips_lock = threading.Lock()


def local_chips() -> ChipCache:
    """This process's chip cache: on a Dask worker, the worker's own, kept across its units."""
    global _chips
    with _chips_lock:
        if _chips is None:
            from engine.analog.chips import ChipCache

            _chips = ChipCache(CHIP_SETS_PER_WORKER)
        return _chips


@functools.lru_cache(maxsize=32)
def local_model(name: str) -> ModelSpec:
    """A model read once per process, by name or folder (what a unit ships instead of the model)."""
    from engine.model_store import find_model

    return find_model(name)


@functools.lru_cache(maxsize=1)
def installed_models() -> tuple[ModelSpec, ...]:
    """The installed models, read once per process (for the gate's choice of a model per case)."""
    from engine.model_store import scan_models

    return tuple(scan_models()[0])


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a SLURM allocation, a container's
    cpuset), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform (macOS)
        return max(1, os.cpu_count() or 1)


def machine_workers() -> int:
    """The default size of a local cluster: one single-threaded worker per usable core."""
    return usable_cores()


def _pin_torch(threads: int) -> None:
    global _torch_threads
    import torch

    _torch_threads = threads
    torch.set_num_threads(threads)


class TorchShare(WorkerPlugin):
    """Pins torch in each worker to its share of its host's cores (usable cores / workers on that
    host, at least 1); AIMC_TORCH_THREADS in a worker's environment overrides it."""

    name = "aimc-torch-share"

    def __init__(self, workers_per_host: dict[str, int]) -> None:
        self.workers_per_host = workers_per_host

    def setup(self, worker: Worker) -> None:
        host = worker.address.rsplit(":", 1)[0]
        share = usable_cores() // self.workers_per_host.get(host, 1)
        _pin_torch(int(os.environ.get("AIMC_TORCH_THREADS") or max(1, share)))


def _unit(fn: Callable[..., Any], item: Any, topic: str | None) -> Any:
    """A unit on a worker: torch on the worker's share of cores (torch counts threads per thread: the
    task's thread is set too), progress sent to the client as worker events."""
    if _torch_threads is not None:
        _pin_torch(_torch_threads)
    if topic is None:
        return fn(item)
    worker = get_worker()
    return fn(item, lambda message: worker.log_event(topic, message))


def _import_all(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


class Executor:
    """Runs units in this process (`workers=0`), on a local cluster of `workers` processes (None: one
    per core), or on the Dask cluster at `scheduler` (tcp://HOST:PORT). Use it as a context manager."""

    def __init__(
        self, workers: int | None = None, scheduler: str | None = None, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> None:
        if workers is not None and workers < 0:
            raise ValueError(f"workers must be 0 (this process) or more, not {workers}")
        self.requested = workers
        self.scheduler = scheduler
        self.timeout_s = timeout_s
        self.client: Client | None = None
        self._cluster: LocalCluster | None = None

    @property
    def in_process(self) -> bool:
        return self.scheduler is None and self.requested == 0

    def __enter__(self) -> Executor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the local cluster or connect to the scheduler; an unreachable one is a `ValueError`."""
        if self.in_process or self.client is not None:
            return
        if self.scheduler is not None:
            try:
                self.client = Client(self.scheduler, timeout=self.timeout_s)
            except (OSError, TimeoutError) as exc:
                raise ValueError(f"no Dask scheduler reachable at {self.scheduler} ({exc})") from None
        else:
            # the scheduler's HTTP server moves to a free port when 8787 is taken (another cluster)
            warnings.filterwarnings("ignore", message="Port 8787 is already in use", category=UserWarning)
            self._cluster = LocalCluster(
                n_workers=self.requested or machine_workers(),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            self.client = Client(self._cluster)
        hosts: dict[str, int] = {}
        for address in self.client.scheduler_info(n_workers=-1)["workers"]:
            host = address.rsplit(":", 1)[0]
            hosts[host] = hosts.get(host, 0) + 1
        self.client.register_plugin(TorchShare(hosts))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    @property
    def size(self) -> int:
        """How many units run at once: the cluster's worker threads, 1 in this process."""
        if self.client is None:
            return 1
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return sum(int(w.get("nthreads", 1)) for w in workers) or 1

    def describe(self) -> str:
        if self.client is None:
            return "in this process"
        where = self.scheduler or "a local Dask cluster"
        return f"{self.size} Dask worker{'s' if self.size != 1 else ''} on {where}"

    def preload(self, modules: Iterable[str]) -> None:
        """Import `modules` on every worker now, all at once (seconds each for torch, MONAI, aihwkit),
        so that the first units do not pay for them; nothing to do in this process's own map."""
        if self.client is not None:
            self.client.run(_import_all, tuple(modules))

    def pids(self) -> dict[str, int]:
        """Each worker's process id by address (to watch or stop one); empty in this process."""
        return {} if self.client is None else self.client.run(os.getpid)

    def map(
        self,
        fn: Callable[..., Any],
        items: Iterable[Item],
        on_progress: Progress | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[tuple[Item, Any]]:
        """(item, fn(item)) for each item as it finishes; in submission order in this process.

        `fn` must be importable by the workers (a module-level function) and `items` picklable. With
        `on_progress`, fn is called as fn(item, progress) and every progress(message) reaches
        on_progress here. A unit that raises ends the map with its exception, unless
        `return_exceptions`: then its exception is yielded in place of a result. Closing the
        iterator early cancels the units not yet run.
        """
        items = list(items)
        if self.client is None:
            yield from self._map_here(fn, items, on_progress, return_exceptions)
            return
        client = self.client
        topic = f"aimc-progress-{uuid.uuid4().hex}" if on_progress is not None else None
        if topic is not None and on_progress is not None:
            handler = on_progress
            client.subscribe_topic(topic, lambda event: handler(event[1]))
        futures = {
            client.submit(
                _unit, fn, item, topic, pure=False, key=f"aimc-{fn.__name__}-{uuid.uuid4().hex}"
            ): item
            for item in items
        }
        try:
            for future in as_completed(futures):
                try:
                    value = future.result()
                except Exception as exc:
                    if not return_exceptions:
                        raise
                    value = exc
                yield futures[future], value
        finally:
            client.cancel(list(futures))
            if topic is not None:
                client.unsubscribe_topic(topic)

    @staticmethod
    def _map_here(
        fn: Callable[..., Any], items: list, on_progress: Progress | None, return_exceptions: bool
    ) -> Iterator[tuple[Any, Any]]:
        for item in items:
            try:
                value = fn(item) if on_progress is None else fn(item, on_progress)
            except Exception as exc:
                if not return_exceptions:
                    raise
                value = exc
            yield item, value
