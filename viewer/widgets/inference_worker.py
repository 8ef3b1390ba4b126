"""Inference off the UI thread: a superqt generator worker driving `engine.pipeline.run_slices`.

Everything slow happens in the worker: building the `Segmenter` (loading the network), programming
the analog chips, the slices themselves and the model's whole-volume post-processing. The UI thread
only adds each finished slice to the result it displays, and swaps in the post-processed labels.
At most one inference worker runs: a new request cancels the current one and starts when it has
stopped (within one Monte-Carlo sample or one chip programming), so two runs never compete for the
CPU or for the same chips. This module is the viewer's one user of the segmenter pool (the chips).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from PySide6.QtCore import QObject, Signal
from superqt.utils import FunctionWorker, GeneratorWorker, create_worker

from engine.analog.chips import ChipCache
from engine.compute_device import read_batch_size
from engine.inference import Cancelled, Segmenter
from engine.model_store import ModelSpec
from engine.pipeline import SliceResult, VolumeResult, preview_while_programming, run_slices, slice_statistics
from engine.postprocessing import keep_large_components
from engine.preprocessing import get_slice, input_slices, normalise_volume, set_slice, to_model_input
from engine.run_settings import RunSettings
from engine.volume import Volume


class InferenceFailed(Exception):
    """A run failed; the message is for the user.

    superqt's generator worker treats a RuntimeError escaping the generator as "worker deleted"
    and drops it silently (no `errored`, no `finished`); torch raises RuntimeErrors, so every
    failure is re-raised as this type instead.
    """


@dataclass(frozen=True)
class Status:
    """What the worker is doing; while chips are programmed, how many of how many are ready."""

    text: str
    chips_ready: int = 0
    chips_total: int = 0


@dataclass(frozen=True)
class Preview:
    """A slice's maps from the first `samples` Monte-Carlo samples, while the other chips are programmed;
    0 samples: the exact network's one pass, shown before the first chip is ready."""

    result: SliceResult
    samples: int


@dataclass(frozen=True)
class PostProcessed:
    """The complete volume's label map after the model's post-processing, computed in the worker."""

    labels: np.ndarray


@dataclass
class Job:
    """One requested run: its settings, the result it fills, and the slices still to do."""

    spec: ModelSpec
    run: RunSettings
    volume: Volume
    result: VolumeResult
    order: list[int]
    cancel: threading.Event = field(default_factory=threading.Event)
    worker: GeneratorWorker | FunctionWorker | None = None  # held so the worker lives as long as its job


def _yield_cpu_to_the_ui() -> None:
    """Run this worker thread, and the pipeline and torch threads it starts, at nice 10.

    On a busy machine with two cores the scheduler otherwise lets inference starve the UI thread
    for hundreds of milliseconds; the GIL is not the problem (torch releases it in its kernels).
    Linux applies the nice value per thread and new threads inherit it; elsewhere this does nothing.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(
            os.PRIO_PROCESS, threading.get_native_id(), max(os.getpriority(os.PRIO_PROCESS, 0), 10)
        )


def _postprocessed(job: Job, slices: Iterator[SliceResult]) -> Iterator[SliceResult | PostProcessed]:
    """Pass the slices on; when they complete the volume, also the post-processed label map.

    Slices of earlier jobs are already in the result (a job starts after the previous one's slices
    were added, and never writes them again), so reading them here is safe; this job's own slices
    are taken from what it yields, as the UI thread may not have added them yet.
    """
    result = job.result
    if not result.keep_largest:
        yield from slices
        return
    labels, done = result.segmentation.copy(), result.finished.copy()
    for item in slices:
        set_slice(labels, result.axis, item.index, item.stats.segmentation)
        done[item.index] = True
        yield item
    if done.all() and not job.cancel.is_set():
        yield PostProcessed(keep_large_components(labels, result.keep_largest, result.component_fraction))


@torch.no_grad()
def _digital_previews(segmenter: Segmenter, job: Job, normalised: np.ndarray) -> Iterator[Preview]:
    """Every slice still to do through the exact network, one pass each (milliseconds a slice), before the
    first chip is programmed (seconds to minutes for all): the reader browses the digital result of the
    whole scan, each slice labelled the digital preview until the chips' result replaces it. The slice on
    screen comes first, alone; the others in read batches, nearest it first."""
    prep, axis = job.spec.preprocessing, job.result.axis
    size = get_slice(job.volume.data, axis, 0).shape
    step = read_batch_size(segmenter.device)
    batches = [job.order[:1]] + [job.order[k : k + step] for k in range(1, len(job.order), step)]
    for indices in batches:
        if job.cancel.is_set():
            return
        x = torch.cat([to_model_input(input_slices(normalised, axis, k, prep)[None], prep) for k in indices])
        probabilities = segmenter.digital_read(x.to(segmenter.device)).cpu()
        for k, p in zip(indices, probabilities, strict=True):
            yield Preview(SliceResult(k, slice_statistics(p[None], size), 0.0, 0, 1), 0)


def _segment(pool: ChipCache, job: Job) -> Iterator[SliceResult | Status | Preview | PostProcessed]:
    """The worker's body: yields `Status`es (and, before a cold analog run's chips are programmed, the
    digital `Preview` of every slice to do, then `Preview`s of the slice on screen from each new chip), one
    `SliceResult` per slice, then `PostProcessed`."""
    _yield_cpu_to_the_ui()
    try:
        if job.cancel.is_set():
            return
        yield Status(f"Loading {job.spec.name} ({job.run.mode})…")
        segmenter = pool.segmenter(job.spec, job.run)
        total = segmenter.samples
        normalised = normalise_volume(job.volume.data, job.spec.preprocessing)  # once, for previews and run
        if job.run.mode == "analog" and len(segmenter.chips) < total:
            first = job.order[0]  # the slice on screen: shown from the chips there are, refined with each
            if not segmenter.chips:
                yield Status(f"Digital preview of {len(job.order)} slices before the chips are programmed…")
                yield from _digital_previews(segmenter, job, normalised)
                yield Status(
                    f"Programming analog chip 1 of {total}; the views show the digital preview…", 0, total
                )
            for read, preview in preview_while_programming(
                segmenter, job.volume, first, job.result.axis, job.cancel, normalised
            ):
                yield Preview(preview, read)
                if read < total:
                    yield Status(
                        f"Programming analog chip {read + 1} of {total}; slice {first + 1} shows "
                        f"{read} sample{'s' if read > 1 else ''}…",
                        read,
                        total,
                    )
            if job.cancel.is_set():
                return
        yield Status(f"Segmenting {len(job.order)} slices ({job.run.mode})…")
        yield from _postprocessed(
            job,
            run_slices(
                segmenter,
                job.volume,
                job.result.axis,
                cancel=job.cancel,
                indices=job.order,
                normalised=normalised,
            ),
        )
    except Cancelled:
        return
    except Exception as exc:  # noqa: BLE001 (every failure must reach the user as a message)
        raise InferenceFailed(f"{type(exc).__name__}: {exc}") from exc


class InferenceRunner(QObject):
    """Starts, supersedes and cancels inference jobs; reports them as Qt signals on the UI thread."""

    started = Signal(object)  # Job
    status = Signal(object, object)  # Job, Status
    sliceFinished = Signal(object, int)  # Job, slice index (already added to job.result)
    slicePreviewed = Signal(object, int)  # Job, slice index (shown in job.result, not finished)
    finished = Signal(object, bool)  # Job, True when every slice of the result is done
    failed = Signal(object, str)  # Job, message for the user

    def __init__(self, pool: ChipCache | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = pool if pool is not None else ChipCache()  # an empty pool is falsy
        self.job: Job | None = None  # the running job
        self._pending: Job | None = None  # waits for the running job to stop

    @property
    def busy(self) -> bool:
        return self.job is not None

    def is_computing(self, result: VolumeResult) -> bool:
        """Whether the running job fills `result` and has not been told to stop."""
        return self.job is not None and self.job.result is result and not self.job.cancel.is_set()

    def start(
        self, spec: ModelSpec, run: RunSettings, volume: Volume, result: VolumeResult, order: list[int]
    ) -> Job:
        """Run `order`'s slices into `result`; a running job is cancelled and this one follows it."""
        job = Job(spec, run, volume, result, order)
        if self.job is None:
            self._launch(job)
        else:
            self.job.cancel.set()
            self._pending = job
        return job

    def cancel(self) -> None:
        """Stop the running job (and forget a queued one); returns at once."""
        self._pending = None
        if self.job is not None:
            self.job.cancel.set()

    def _launch(self, job: Job) -> None:
        job.order = [
            k for k in job.order if not job.result.finished[k]
        ]  # a superseded run may have done some
        if not job.order:
            self.finished.emit(job, job.result.complete)
            return
        worker = create_worker(_segment, self.pool, job, _start_thread=False, _ignore_errors=True)
        job.worker = worker
        worker.yielded.connect(lambda item: self._on_yielded(job, item))
        worker.errored.connect(lambda exc: self.failed.emit(job, str(exc)))
        worker.finished.connect(lambda: self._on_finished(job))
        self.job = job
        self.started.emit(job)
        worker.start()

    def _on_yielded(self, job: Job, item: SliceResult | Status | Preview | PostProcessed) -> None:
        if isinstance(item, Status):
            self.status.emit(job, item)
            return
        if isinstance(item, PostProcessed):  # comes after every slice of the volume was added
            job.result.segmentation = item.labels
            return
        if isinstance(item, Preview):
            job.result.show(item.result, item.samples)
            self.slicePreviewed.emit(job, item.result.index)
            return
        job.result.add(item)
        self.sliceFinished.emit(job, item.index)

    def _on_finished(self, job: Job) -> None:
        job.result.drop_previews()  # a stopped run's preview is not a result
        self.job = None
        self.finished.emit(job, job.result.complete)
        pending, self._pending = self._pending, None
        if pending is not None:
            self._launch(pending)
