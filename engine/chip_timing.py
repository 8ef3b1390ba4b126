"""A timing model of a whole volume on an AIMC chip, with and without pipelining across slices.

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

from dataclasses import dataclass

from engine.tile_mapping import NetworkMapping

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
