"""The slice pipeline: preprocess -> infer -> postprocess over a volume's slices, stages overlapping.

It starts at a requested slice (the one on screen) and fans out from it, yields each slice's
result as soon as it is ready (the requested one first), reports progress, and stops within one
Monte-Carlo sample of a cancel. Threads run the stages, joined by small queues, so slice k+1 is
being cut and normalised while slice k is inferred and slice k-1 is resized and reduced to
statistics; where reads may run at once (fast chips, digital), one inference worker per core reads
slices side by side. torch releases the GIL inside its kernels, so the stages genuinely overlap.
Each stage runs on one torch thread (torch's thread count is per thread): with the stages on
torch's default OpenMP teams the pipeline ran 1.7x slower than one slice at a time on two cores;
with one thread each and one inference worker it was on par; two workers on one thread each read
1.5x as fast as one on two torch threads (U-Net: 71 against 46 reads/s), and a 20-slice LGG volume
at MC 16 took 4.8 s instead of 7.2 s.
Slices travel to inference in batches (`Segmenter.batch_size`, sized for the device: a few on a CPU,
tens on a GPU): each chip read takes the whole batch, and each slice gets the result it gets read
alone. The slice on screen goes alone in the first batch, so it still comes out first.
No Qt here: the viewer's worker and the CLI both drive this generator.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.inference import Cancelled, Segmenter
from engine.model_store import ModelSpec
from engine.postprocessing import keep_large_components
from engine.preprocessing import (
    get_slice,
    input_slices,
    normalise_volume,
    resize_probabilities,
    set_slice,
    slice_count,
    to_model_input,
)
from engine.uncertainty import MAPS, SliceStats, mc_statistics
from engine.volume import Volume

_DONE = object()


def fan_out_order(n: int, start: int | None) -> list[int]:
    """start, start+1, start-1, start+2, ... covering 0..n-1 once each."""
    if n <= 0:
        return []
    s = n // 2 if start is None else min(max(int(start), 0), n - 1)
    order = [s]
    for d in range(1, n):
        for k in (s + d, s - d):
            if 0 <= k < n:
                order.append(k)
    return order


def slice_statistics(samples: torch.Tensor, size: tuple[int, int]) -> SliceStats:
    """A slice's Monte-Carlo statistics from its (S, C, h, w) samples, at the slice's own size."""
    return mc_statistics(resize_probabilities(samples, size))


def segment_slice(segmenter: Segmenter, image: np.ndarray, index: int = 0) -> SliceStats:
    """One normalised 2D slice (or image) through the model: its statistics at its own size.

    `image` is (H, W), or (C, H, W) as `input_slices` gives it: a 2.5D model reads the slice with its
    neighbours, which a lone slice cannot supply. `index` seeds the analog reads as the pipeline does
    for slice `index` of a volume.
    """
    return segment_slices(segmenter, [image], [index])[0]


def segment_slices(
    segmenter: Segmenter, images: list[np.ndarray], indices: list[int] | None = None
) -> list[SliceStats]:
    """Several normalised slices (or images), each as `segment_slice` takes it, through the model in
    batches of `segmenter.batch_size`: each gets the statistics `segment_slice` gives it alone."""
    indices = list(range(len(images))) if indices is None else indices
    prep, size = segmenter.spec.preprocessing, segmenter.batch_size
    stacks = [image if image.ndim == 3 else image[None] for image in images]
    reads = 2 * prep.context + 1
    for channels in stacks:
        if channels.shape[0] != reads:
            raise ValueError(
                f"{segmenter.spec.name} reads {reads} neighbouring slices; got {channels.shape[0]}"
            )
    out: list[SliceStats] = []
    for i in range(0, len(stacks), size):
        x = torch.cat([to_model_input(c[None], prep) for c in stacks[i : i + size]])
        samples = segmenter.predict_batch(x, indices[i : i + size])
        out += [slice_statistics(s, c.shape[1:]) for s, c in zip(samples, stacks[i : i + size], strict=True)]
    return out


@dataclass
class SliceResult:
    index: int
    stats: SliceStats
    seconds: float
    done: int  # slices finished so far, this one included
    total: int


@dataclass
class VolumeResult:
    """Maps of a whole volume in the scan's canonical voxel order, filled slice by slice.

    `finalise()` applies the model's post-processing once the last slice is in: the labels in
    `keep_largest` are cut to their largest 3D component and any other of at least `component_fraction`
    of its size. Until then the label map is the network's, slice by slice. (The viewer computes the
    same off its UI thread: `postprocessed_labels`.)
    """

    volume: Volume
    axis: str
    num_classes: int
    keep_largest: tuple[int, ...] = ()
    component_fraction: float = 1.0
    probabilities: np.ndarray = field(init=False)  # (I, J, K, C) mean class probabilities
    segmentation: np.ndarray = field(init=False)  # (I, J, K) uint8
    maps: dict[str, np.ndarray] = field(init=False)  # entropy, mutual_information, std: (I, J, K)
    finished: np.ndarray = field(init=False)  # bool per slice along `axis`
    seconds: list[float] = field(default_factory=list)
    overlap: np.ndarray | None = (
        None  # (S, S) foreground overlaps of the samples, summed over finished slices
    )
    previews: dict[int, int] = field(default_factory=dict)  # unfinished slices shown from so many samples

    @classmethod
    def for_model(cls, volume: Volume, spec: ModelSpec) -> VolumeResult:
        """An empty result for `spec` on `volume`: the model's slice axis, classes and post-processing."""
        return cls(
            volume,
            spec.preprocessing.slice_axis,
            spec.num_classes,
            tuple(spec.keep_largest),
            spec.component_fraction,
        )

    def __post_init__(self) -> None:
        shape = self.volume.shape
        self.probabilities = np.zeros((*shape, self.num_classes), np.float32)
        self.probabilities[..., 0] = 1.0
        self.segmentation = np.zeros(shape, np.uint8)
        self.maps = {m: np.zeros(shape, np.float32) for m in MAPS}
        self.finished = np.zeros(slice_count(shape, self.axis), bool)

    def add(self, result: SliceResult) -> None:
        """A finished slice."""
        first = not self.finished[result.index]
        self._put(result)
        if first and result.stats.overlap is not None:
            self.overlap = (
                result.stats.overlap if self.overlap is None else self.overlap + result.stats.overlap
            )
        self.previews.pop(result.index, None)
        self.finished[result.index] = True
        self.seconds.append(result.seconds)

    def show(self, result: SliceResult, samples: int) -> None:
        """A preview of an unfinished slice from its first `samples` Monte-Carlo samples."""
        self._put(result)
        self.previews[result.index] = samples

    def drop_previews(self) -> None:
        """Clear the previewed slices that were not finished (a stopped run): only finished slices count."""
        for k in self.previews:
            empty = np.zeros_like(get_slice(self.segmentation, self.axis, k))
            set_slice(self.segmentation, self.axis, k, empty)
            for m in MAPS:
                set_slice(self.maps[m], self.axis, k, empty.astype(np.float32))
            background = np.zeros((*empty.shape, self.num_classes), np.float32)
            background[..., 0] = 1.0
            set_slice(self.probabilities, self.axis, k, background)
        self.previews.clear()

    def _put(self, result: SliceResult) -> None:
        k, st = result.index, result.stats
        set_slice(self.probabilities, self.axis, k, np.moveaxis(st.probabilities, 0, -1))
        set_slice(self.segmentation, self.axis, k, st.segmentation)
        for m in MAPS:
            set_slice(self.maps[m], self.axis, k, getattr(st, m))

    def finalise(self) -> None:
        """Apply the post-processing when every slice is done; calling it again changes nothing."""
        if self.keep_largest and self.complete:
            self.segmentation = keep_large_components(
                self.segmentation, self.keep_largest, self.component_fraction
            )

    @property
    def complete(self) -> bool:
        return bool(self.finished.all())

    def label_volumes_ml(self) -> dict[int, float]:
        counts = np.bincount(self.segmentation.ravel(), minlength=self.num_classes)
        return {c: float(counts[c]) * self.volume.voxel_volume_ml for c in range(1, self.num_classes)}

    def mean_uncertainty_in_labels(self, map_name: str = "entropy") -> dict[int, float]:
        m = self.maps[map_name]
        return {
            c: float(m[self.segmentation == c].mean()) if (self.segmentation == c).any() else 0.0
            for c in range(1, self.num_classes)
        }

    def foreground_probability(self) -> np.ndarray:
        return 1.0 - self.probabilities[..., 0]


def run_slices(
    segmenter: Segmenter,
    volume: Volume,
    axis: str | None = None,
    start: int | None = None,
    cancel: threading.Event | None = None,
    indices: list[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    normalised: np.ndarray | None = None,
    batch_size: int | None = None,
) -> Iterator[SliceResult]:
    """Yield one `SliceResult` per slice, in fan-out order from `start`.

    `normalised`: the volume after `normalise_volume`, where the caller has it already.
    `batch_size`: slices per chip read (default: `segmenter.batch_size`, sized for its device); the
    results do not depend on it.

    Closing the generator early or setting `cancel` stops all stages; a cancel raises nothing
    here, the generator just ends.
    """
    prep = segmenter.spec.preprocessing
    axis = axis or prep.slice_axis
    n = slice_count(volume.shape, axis)
    order = indices if indices is not None else fan_out_order(n, start)
    cancel = cancel or threading.Event()
    stop = threading.Event()  # set when the consumer goes away or a stage fails
    to_infer: queue.Queue = queue.Queue(maxsize=2)
    to_post: queue.Queue = queue.Queue(maxsize=2)
    results: queue.Queue = queue.Queue(maxsize=4)
    errors: list[BaseException] = []

    def halted() -> bool:
        return cancel.is_set() or stop.is_set()

    def put(q: queue.Queue, item) -> bool:
        while not halted():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(q: queue.Queue):
        while not halted():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue
        return _DONE

    def guarded(
        stage: Callable[[], None], downstream: queue.Queue, configured: threading.Event
    ) -> Callable[[], None]:
        def body() -> None:
            # torch's first call in a thread applies the last count set in any thread; then this thread's own.
            torch.get_num_threads()
            torch.set_num_threads(1)
            configured.set()
            try:
                stage()
            except Cancelled:
                pass
            except BaseException as exc:  # reaches the consumer, re-raised there
                errors.append(exc)
                stop.set()
            finally:
                put(downstream, _DONE)  # end of stream, also after a failure

        return body

    per_read = max(1, batch_size or segmenter.batch_size)
    batches = [order[:1], *(order[i : i + per_read] for i in range(1, len(order), per_read))] if order else []

    def preprocess() -> None:
        data = normalise_volume(volume.data, prep) if normalised is None else normalised
        for ks in batches:
            x = torch.cat([to_model_input(input_slices(data, axis, k, prep)[None], prep) for k in ks])
            if not put(to_infer, (ks, x, time.perf_counter())):
                return

    def infer() -> None:
        while (item := get(to_infer)) is not _DONE:
            ks, x, t0 = item
            samples = segmenter.predict_batch(x, ks, cancel)
            share = (time.perf_counter() - t0) / len(ks)  # a slice's part of its batch's time
            for k, one in zip(ks, samples, strict=True):
                if not put(to_post, (k, one, share)):
                    return
        put(to_infer, _DONE)  # the end, for the other inference workers too

    def postprocess() -> None:
        emitted, ended = 0, 0
        size = get_slice(volume.data, axis, 0).shape
        held: list[tuple[int, SliceStats, float]] = []  # done before the first slice of `order`: held back
        while ended < workers:
            item = get(to_post)
            if item is _DONE:  # an inference worker ended (or the run was halted)
                ended += 1
                continue
            k, samples, share = item
            t0 = time.perf_counter()
            held.append((k, slice_statistics(samples, size), share + time.perf_counter() - t0))
            if emitted == 0 and all(h[0] != order[0] for h in held):
                continue  # the slice on screen comes out first
            for k, stats, seconds in sorted(held, key=lambda h: h[0] != order[0]):
                emitted += 1
                if not put(results, SliceResult(k, stats, seconds, emitted, len(order))):
                    return
            held.clear()

    # The slices are read by one inference worker per core where reads may run at once (fast chips
    # draw from per-read generators): two on two cores, 1.5x the reads per second of one worker on
    # two torch threads. Each stage on one torch thread; started one after another, and the count
    # torch keeps for threads started later is put back to the caller's.
    workers = min(2, os.cpu_count() or 1) if segmenter.concurrent_reads else 1
    caller_threads = torch.get_num_threads()
    stages = [(preprocess, to_infer), *[(infer, to_post)] * workers, (postprocess, results)]
    configured = [threading.Event() for _ in stages]
    threads = [
        threading.Thread(target=guarded(f, q, c), daemon=True, name=f"pipeline-{f.__name__}")
        for (f, q), c in zip(stages, configured, strict=True)
    ]
    for t, ready in zip(threads, configured, strict=True):
        t.start()
        ready.wait()
    torch.set_num_threads(caller_threads)
    try:
        while True:
            item = get(results)
            if item is _DONE:
                break
            if progress is not None:
                progress(item.done, item.total)
            yield item
            if item.done == len(order):
                break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    if errors:
        raise errors[0]


def preview_while_programming(
    segmenter: Segmenter,
    volume: Volume,
    index: int,
    axis: str | None = None,
    cancel: threading.Event | None = None,
    normalised: np.ndarray | None = None,
) -> Iterator[tuple[int, SliceResult]]:
    """Program an analog run's chips one by one, reading slice `index` with each as soon as it is ready.

    Yields (samples read, the slice's statistics over them) after every newly programmed chip, and
    once after the chips already programmed (read without waiting), so the slice on screen shows
    after the first chip instead of the last (16 chips take seconds to program on a CPU). Reads are
    seeded per (slice, sample): the last preview is the slice's final result (to float rounding:
    the pipeline's stages run on one torch thread). A preview finishes no slice (its `done` is 0).
    A cancel ends the generator quietly. `normalised` as for `run_slices`.
    """
    prep = segmenter.spec.preprocessing
    axis = axis or prep.slice_axis
    t0 = time.perf_counter()
    data = normalise_volume(volume.data, prep) if normalised is None else normalised
    x = to_model_input(input_slices(data, axis, index, prep)[None], prep)
    size = get_slice(volume.data, axis, 0).shape
    programmed = len(segmenter.chips)
    samples: list[torch.Tensor] = []
    for s in range(segmenter.samples):
        if cancel is not None and cancel.is_set():
            return
        samples.append(segmenter.read(x, index, s))
        if s + 1 >= programmed:
            yield (
                s + 1,
                SliceResult(
                    index, slice_statistics(torch.cat(samples), size), time.perf_counter() - t0, 0, 1
                ),
            )


def segment_volume(segmenter: Segmenter, volume: Volume, **kwargs) -> VolumeResult:
    """Run the pipeline over every slice and collect a finalised `VolumeResult`."""
    result = VolumeResult.for_model(volume, segmenter.spec)
    for r in run_slices(segmenter, volume, result.axis, **kwargs):
        result.add(r)
    result.finalise()
    return result
