"""Claim 4, pipelining across slices: measured on this machine, and modelled on an AIMC chip.

The measurement times the slice pipeline (`segment_volume`) against one slice at a time. The model
times a whole volume on a chip, with and without pipelining across slices.

Every analog layer has its own tiles (weight-stationary), and the tiles of one layer work in
parallel, so a layer needs `reuse` matrix-vector products (MVMs) one after another per slice:
its time per slice is reuse * t_mvm. Without pipelining, a slice passes all layers before the next
slice enters; with pipelining, slice k+1 enters layer 1 while slice k is in layer 2, so after the
pipeline fills, one slice leaves per slowest-layer time.

The MVM time comes from a published chip: Le Gallo et al. 2023 (Nature Electronics 6, 680-693),
64 PCM cores of 256x256 unit cells, 63.1 TOPS for 8-bit MVMs in one-phase read mode, i.e.
2 * 256 * 256 operations per MVM per core -> about 133 ns per MVM (four-phase, high-precision mode:
16.1 TOPS, about 521 ns). We assume one MVM of a 512x512 tile takes the same time, as the
crossbar's rows and columns are read in parallel; digital work between layers is not modelled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.inference import Segmenter
from engine.model_store import ModelSpec, weights_hash
from engine.pipeline import segment_slice, segment_volume
from engine.preprocessing import input_slices, normalise_volume
from engine.run_settings import Mode, RunSettings
from engine.volume import Volume
from training.report.tile_mapping import NetworkMapping

LE_GALLO_2023 = {"cores": 64, "rows": 256, "cols": 256, "tops_one_phase": 63.1, "tops_four_phase": 16.1}


def mvm_time_s(tops: float = LE_GALLO_2023["tops_one_phase"]) -> float:
    """Seconds per MVM of one core, from the chip's peak throughput."""
    ops_per_mvm = 2 * LE_GALLO_2023["rows"] * LE_GALLO_2023["cols"]
    return ops_per_mvm / (tops * 1e12 / LE_GALLO_2023["cores"])


@dataclass
class VolumeTiming:
    slices: int
    sequential_latency_s: float  # whole volume, one slice at a time
    pipelined_latency_s: float  # whole volume, slices overlapping across layers
    slice_latency_s: float  # one slice through all layers

    @property
    def sequential_throughput(self) -> float:
        return self.slices / self.sequential_latency_s

    @property
    def pipelined_throughput(self) -> float:
        return self.slices / self.pipelined_latency_s

    @property
    def speedup(self) -> float:
        return self.sequential_latency_s / self.pipelined_latency_s


def volume_timing(mapping: NetworkMapping, slices: int, t_mvm: float | None = None) -> VolumeTiming:
    """Latency of `slices` slices through the analog layers of `mapping`."""
    t = mvm_time_s() if t_mvm is None else t_mvm
    stage = [layer.reuse * t for layer in mapping.layers]
    one = sum(stage)
    return VolumeTiming(slices, slices * one, one + (slices - 1) * max(stage), one)


def time_pipeline(spec: ModelSpec, volume: Volume, mc: int) -> tuple[float, float]:
    """Seconds for the volume one slice at a time, and through the pipeline (`segment_volume`)."""
    run = RunSettings(
        model=spec.name, mode=Mode.ANALOG, mc_samples=mc, noise_level=1.0, drift_s=3600.0, seed=0
    )
    segmenter = Segmenter(spec, run)
    segmenter.program_all()
    t0 = time.perf_counter()
    data = normalise_volume(volume.data, spec.preprocessing)
    for k in range(volume.shape[2]):
        segment_slice(segmenter, input_slices(data, "axial", k, spec.preprocessing), k)
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    segment_volume(segmenter, volume)
    return sequential, time.perf_counter() - t0


def pipelining(
    spec: ModelSpec,
    volume: Volume,
    mc: int,
    mappings: dict[str, NetworkMapping],
    kept: dict | None = None,
) -> dict:
    """Measured: the pipeline against one slice at a time; modelled: an AIMC chip.

    `kept`, an earlier result for the same weights, volume size and MC, keeps its timings: a report
    rewritten from measurements must not re-time on a machine busy with training."""
    n, weights = volume.shape[2], weights_hash(spec)
    same = (spec.name, weights, n, mc)
    if kept and tuple(kept.get(k) for k in ("model", "weights", "slices", "mc")) == same:
        sequential, pipelined = kept["sequential_s"], kept["pipelined_s"]
    else:
        sequential, pipelined = time_pipeline(spec, volume, mc)
    chip = []
    for arch, m in mappings.items():
        t = volume_timing(m, n)
        chip.append(
            {
                "arch": arch,
                "slices": n,
                "slice_latency_ms": 1e3 * t.slice_latency_s,
                "sequential_ms": 1e3 * t.sequential_latency_s,
                "pipelined_ms": 1e3 * t.pipelined_latency_s,
                "speedup": t.speedup,
                "slices_per_s_pipelined": t.pipelined_throughput,
            }
        )
    return {
        "model": spec.name,
        "weights": weights,
        "slices": n,
        "mc": mc,
        "sequential_s": sequential,
        "pipelined_s": pipelined,
        "sequential_slices_per_s": n / sequential,
        "pipelined_slices_per_s": n / pipelined,
        "chip": chip,
        "t_mvm_ns": 1e9 * mvm_time_s(),
    }


@dataclass(frozen=True)
class ChipCurves:
    """One architecture on the modelled chip: each layer's time per slice, and volume latency by slices."""

    stage_us: list[float]
    slices: np.ndarray
    sequential_ms: list[float]
    pipelined_ms: list[float]


def chip_curves(mapping: NetworkMapping, max_slices: int, t_mvm: float) -> ChipCurves:
    slices = np.arange(1, max_slices + 1)
    timings = [volume_timing(mapping, int(n), t_mvm) for n in slices]
    return ChipCurves(
        [1e6 * layer.reuse * t_mvm for layer in mapping.layers],
        slices,
        [1e3 * t.sequential_latency_s for t in timings],
        [1e3 * t.pipelined_latency_s for t in timings],
    )
