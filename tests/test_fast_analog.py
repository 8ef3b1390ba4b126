"""The fast analog path against aihwkit's torch tile, layer by layer and for a whole U-Net.

Both read the same programmed, drifted chip. Without noise they agree to float rounding (with the
ADC on, a value on a rounding boundary may land one ADC level apart); with noise, the spread of
many reads agrees.
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.simulator.parameters.enums import NoiseManagementType
from torch import nn

from engine.analog.chips import program_chip
from engine.analog.conversion import calibrated_analog, to_analog
from engine.analog.device import DeviceSettings, rpu_config
from engine.analog.fast_layers import FastAnalogConv2d, FastAnalogLinear, fast_chip
from engine.analog.periphery import add_gaussian_, noise_draws_per_read, seeded_reads
from engine.architectures import ARCHITECTURES, build_network, default_arguments
from engine.inference import Segmenter
from engine.run_settings import RunSettings


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many small ops: on a shared 2-core machine a second OpenMP thread only waits for its core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


QUIET = DeviceSettings(out_noise=0.0)  # programming noise and drift on, no per-read noise
SMALL_TILES = 64  # multi-tile layers without the cost of programming large ones


def _chip(layer: nn.Module, settings: DeviceSettings = QUIET, adc: bool = True, seed: int = 1) -> nn.Module:
    """`layer` on tiles with spread input ranges, programmed and drifted."""
    if getattr(layer, "small_tiles", False):
        settings = settings.with_(tile_size=SMALL_TILES)
    cfg = rpu_config(settings)
    if not adc:
        cfg.forward.out_res = -1.0
    torch.manual_seed(seed)
    analog = convert_to_analog(layer, cfg).eval()
    for k, tile in enumerate(analog.analog_tiles()):
        tile.set_input_range(1.5 + 0.5 * k)  # every tile its own range
    return program_chip(analog, settings, seed)


def _input(layer: nn.Module, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if isinstance(layer, nn.Conv2d):
        return 1.5 * torch.randn(2, layer.in_channels, 17, 15, generator=g)
    return 1.5 * torch.randn(3, 5, layer.in_features, generator=g)


def _adc_step(fast: nn.Module) -> torch.Tensor:
    """One ADC level in output units, per output feature (the largest over the tiles)."""
    step = torch.zeros(fast.out_features)
    scales = fast.scale.abs().view(len(fast.out_slices), -1)  # per tile, padded to the widest
    for k, s in enumerate(fast.out_slices):
        step[s] = torch.maximum(step[s], scales[k, : s.stop - s.start])
    return step


def _tiles(chip: nn.Module) -> int:
    return len(list(chip.analog_tiles()))


def _small_tiles(layer: nn.Module) -> nn.Module:
    layer.small_tiles = True
    return layer


SINGLE = [
    nn.Conv2d(8, 16, 3, padding=1),
    nn.Conv2d(5, 7, (3, 2), stride=2, padding=(1, 0)),
    nn.Linear(30, 20),
    nn.Linear(512, 512),
]
MULTI = [
    nn.Conv2d(128, 16, 3, stride=2, padding=1),  # 1152 inputs: 3 tiles of 384, which split kernels
    nn.Conv2d(64, 8, 3, padding=1),  # 576 inputs: 2 tiles of 288, whole channels
    _small_tiles(nn.Conv2d(16, 70, 3, padding=1)),  # 144 inputs: 3 x 48; 70 outputs: 2 x 35
    _small_tiles(nn.Linear(100, 90)),  # 2 x 2 tiles
    _small_tiles(nn.Conv2d(13, 71, 3, padding=1)),  # 117 inputs: 59 + 58; 71 outputs: 36 + 35
    _small_tiles(nn.Linear(101, 91)),
]  # 51 + 50 inputs, 46 + 45 outputs: unequal tiles, padded


@pytest.fixture(params=["grouped", "per tile"])
def conv_path(request, monkeypatch):
    """Both ways the fast path runs a multi-tile convolution: grouped (small images), one per tile."""
    import engine.analog.fast_layers as fa

    monkeypatch.setattr(fa, "GROUPED_MAX_PIXELS", 10**9 if request.param == "grouped" else 0)
    return request.param


@pytest.mark.parametrize("layer", SINGLE + MULTI, ids=lambda m: repr(m)[:40])
def test_equal_to_aihwkit_without_adc(layer, conv_path):
    chip = _chip(layer, adc=False)
    fast = fast_chip(chip)
    x = _input(layer)
    with torch.no_grad():
        ref, out = chip(x), fast(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", SINGLE + MULTI, ids=lambda m: repr(m)[:40])
def test_with_adc_at_most_one_level_apart(layer, conv_path):
    chip = _chip(layer)
    fast = fast_chip(chip)
    assert type(fast) is (FastAnalogConv2d if isinstance(layer, nn.Conv2d) else FastAnalogLinear)
    assert len(fast.out_slices) == _tiles(chip) and (_tiles(chip) == 1) == (layer in SINGLE)
    x = _input(layer)
    with torch.no_grad():
        ref, out = chip(x), fast(x)
    diff = (out - ref).abs()
    step = _adc_step(fast).view(-1, 1, 1) if isinstance(layer, nn.Conv2d) else _adc_step(fast)
    assert (diff <= step * 1.001 + 1e-5).all()
    assert (diff <= 1e-5 + 1e-5 * ref.abs()).float().mean() > 0.999


def test_one_chip_read_by_either_path_keeps_one_weight_copy(monkeypatch):
    import engine.analog.fast_layers as fa

    fast = fast_chip(_chip(nn.Conv2d(128, 16, 3, padding=1)))
    x = _input(nn.Conv2d(128, 16, 3))
    reads = []
    for pixels in (10**9, 0, 10**9):  # grouped, per tile, grouped again
        monkeypatch.setattr(fa, "GROUPED_MAX_PIXELS", pixels)
        with torch.no_grad():
            reads.append(fast(x))
        assert fast.weight.is_contiguous(
            memory_format=torch.channels_last if pixels else torch.contiguous_format
        )
    assert ((reads[1] - reads[0]).abs() <= _adc_step(fast).view(-1, 1, 1) * 1.001 + 1e-5).all()
    assert torch.equal(reads[0], reads[2])
    assert sorted(name for name, b in fast.named_buffers()) == [
        "bias",
        "gather_index",
        "input_range",
        "scale",
        "weight",
    ]


@pytest.mark.parametrize(
    "layer", [nn.Conv2d(128, 16, 3, padding=1), _small_tiles(nn.Linear(100, 90))], ids=["conv", "linear"]
)
def test_same_read_noise_spread(layer, conv_path):
    """Output noise is drawn per tile before each ADC: the spread of reads must match aihwkit's."""
    settings = DeviceSettings(out_noise=0.1)
    chip = _chip(layer, settings)
    fast = fast_chip(chip)
    x = _input(layer)[:1]
    with torch.no_grad():
        ref = torch.stack([chip(x) for _ in range(200)])
        out = torch.stack([fast(x) for _ in range(200)])
    ref_std, out_std = ref.std(0).mean(), out.std(0).mean()
    assert abs(out_std / ref_std - 1) < 0.1
    assert (out.mean(0) - ref.mean(0)).abs().mean() < 0.2 * ref_std


def test_per_read_pcm_noise_follows_its_formula():
    """y_i gets w_noise * sqrt(sum_j |W_ij| x_j^2) * N(0, 1), in normalised units, per tile."""
    layer = nn.Conv2d(6, 4, 3, padding=1)
    chip = _chip(layer, adc=False)
    w_noise = 0.05
    fast = fast_chip(chip, read_noise=w_noise)
    x = _input(layer)[:1]
    with torch.no_grad():
        reads = torch.stack([fast(x) for _ in range(400)])
        quiet = fast_chip(chip)(x)
    tile = next(chip.analog_tiles())
    r = tile.input_range.item()
    xn = x.clamp(-r, r) / r
    xn = (xn / (2 / 254)).round() * (2 / 254)  # the 8-bit DAC
    conductance = tile.tile.weight.detach().abs().view(4, 6, 3, 3)
    predicted = w_noise * F.conv2d(xn.square(), conductance, padding=1).sqrt() * fast.scale
    assert abs(reads.std(0).mean() / predicted.mean() - 1) < 0.1
    assert (reads.mean(0) - quiet).abs().mean() < 0.2 * predicted.mean()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_added_noise_is_gaussian_independent_seeded_and_scaled(layout):
    base = (
        torch.arange(2 * 3 * 200 * 200, dtype=torch.float32)
        .view(2, 3, 200, 200)
        .contiguous(memory_format=layout)
    )
    envelope = torch.rand_like(base) + 0.5
    reads = []
    for _ in range(2):
        torch.manual_seed(5)
        reads.append(add_gaussian_(base.clone(), 0.5) - base)
    a, b = reads
    assert a.is_contiguous(memory_format=layout) and torch.equal(a, b)
    assert abs(a.mean()) < 0.01 and abs(a.std() - 0.5) < 0.005
    flat = a.permute(0, 2, 3, 1).reshape(-1)  # neighbours along every axis, as well as far apart
    for lag in (1, 3, 200, flat.numel() // 2):
        assert abs(torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1]) < 0.01
    assert abs(((add_gaussian_(base.clone(), 0.5, envelope) - base) / envelope).std() - 0.5) < 0.005


def test_seeded_reads_repeat_torch_manual_seed_and_ignore_other_threads():
    fast = fast_chip(_chip(nn.Conv2d(16, 8, 3, padding=1), DeviceSettings(out_noise=0.1)))
    x = _input(nn.Conv2d(16, 8, 3))
    with torch.no_grad():
        torch.manual_seed(11)
        globally = fast(x)
        with seeded_reads(11):
            torch.manual_seed(0)  # the global generator is not the one read
            local = fast(x)
        results: dict[int, torch.Tensor] = {}

        def read(seed: int) -> None:
            for _ in range(20):
                with seeded_reads(seed), torch.no_grad():
                    results[seed] = fast(x)

        threads = [threading.Thread(target=read, args=(seed,)) for seed in (11, 12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert torch.equal(globally, local) and torch.equal(results[11], local)
    assert not torch.equal(results[12], local)


@pytest.mark.parametrize("read_noise", [0.0, 0.05])
def test_noise_draws_per_read_counts_what_a_read_draws(monkeypatch, read_noise):
    import engine.analog.periphery as periphery

    layer = _small_tiles(nn.Conv2d(16, 70, 3, padding=1))  # 3 x 2 tiles: each row tile draws for its outputs
    fast = fast_chip(_chip(layer, DeviceSettings(out_noise=0.1)), read_noise=read_noise)
    x = _input(layer)
    drawn = []
    real = periphery.add_gaussian_
    monkeypatch.setattr(periphery, "add_gaussian_", lambda y, *a: drawn.append(y.numel()) or real(y, *a))
    counted = noise_draws_per_read(fast, x)
    assert counted == sum(drawn) == (2 if read_noise else 1) * 3 * 2 * 70 * 17 * 15


def test_refuses_what_it_does_not_reproduce():
    cfg = rpu_config(QUIET)
    cfg.forward.noise_management = NoiseManagementType.ABS_MAX
    analog = convert_to_analog(nn.Linear(4, 3), cfg).eval()
    with pytest.raises(NotImplementedError, match="noise management"):
        fast_chip(analog)


def _network(arch: str) -> tuple[nn.Module, torch.Tensor]:
    """A shipped architecture at 64x64 (random weights) and random calibration images."""
    torch.manual_seed(0)
    return build_network(arch, default_arguments(arch, 1, 2, 64)).eval(), torch.rand(4, 1, 64, 64)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def network(request):
    return _network(request.param)


@pytest.fixture(scope="module")
def unet():
    return _network("unet")


def _network_chip(network, settings: DeviceSettings, seed: int) -> tuple[nn.Module, torch.Tensor]:
    net, images = network
    return program_chip(calibrated_analog(net, settings, images, batch_size=4), settings, seed), images[:1]


def test_every_layer_of_every_model_matches_on_its_own_activations(network):
    """Each analog layer of the whole model, fed what aihwkit's chip feeds it, gives aihwkit's output
    to within one ADC level, and exactly but for a rare value on a rounding boundary. (End to end, an
    untrained network amplifies those rare flips through later roundings and attention; the U-Net
    test and the noise statistics below hold the whole model.) Multi-tile layers hand on
    channels-last tensors: the forward passes also show every architecture takes them."""
    chip, x = _network_chip(network, QUIET, seed=3)
    fast = fast_chip(chip)
    reference = dict(chip.named_modules())
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(name: str):
        return lambda _, inputs, output: seen.__setitem__(name, (inputs[0], output)) and None

    layers = {n: m for n, m in fast.named_modules() if isinstance(m, (FastAnalogConv2d, FastAnalogLinear))}
    handles = [reference[n].register_forward_hook(keep(n)) for n in layers]
    with torch.no_grad():
        fast(x)
        chip(x)
    for h in handles:
        h.remove()
    assert set(seen) == set(layers) and any(len(m.out_slices) > 1 for m in layers.values())
    with torch.no_grad():
        for name, layer in layers.items():
            inputs, ref = seen[name]
            diff = (layer(inputs) - ref).abs()
            step = (
                _adc_step(layer).view(-1, 1, 1) if isinstance(layer, FastAnalogConv2d) else _adc_step(layer)
            )
            assert (diff <= step * 1.001 + 1e-5).all(), name
            assert (diff > 1e-5 + 1e-5 * ref.abs()).float().mean() < 0.001, name


def test_whole_model_with_noise_has_the_same_statistics(network):
    chip, x = _network_chip(network, DeviceSettings(noise_level=1.0), seed=4)
    fast = fast_chip(chip)
    with torch.no_grad():
        ref = torch.stack([torch.softmax(chip(x), 1)[:, 1] for _ in range(12)])
        out = torch.stack([torch.softmax(fast(x), 1)[:, 1] for _ in range(12)])
    ref_std, out_std = ref.std(0).mean(), out.std(0).mean()
    assert ref_std > 0
    assert abs(out_std / ref_std - 1) < 0.15
    assert (out.mean(0) - ref.mean(0)).abs().mean() < 0.5 * ref_std


def test_whole_unet_without_noise_matches(unet):
    """Layers agree to float rounding; chained through the U-Net, a rare DAC/ADC level flips and
    propagates a little, far less than the whole effect of quantisation (analog against digital)."""
    chip, x = _network_chip(unet, DeviceSettings(noise_level=0.0), seed=3)
    fast = fast_chip(chip)
    assert not any(hasattr(m, "analog_module") for m in fast.modules())
    with torch.no_grad():
        ref, out, digital = chip(x), fast(x), unet[0](x)
    assert (out - ref).abs().mean() < 0.25 * (digital - ref).abs().mean()
    assert (torch.softmax(out, 1) - torch.softmax(ref, 1)).abs().max() < 0.02
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.995


def test_a_model_reprogrammed_in_place_gives_the_chips_of_fresh_copies():
    analog = _chip(nn.Conv2d(64, 8, 3, padding=1), DeviceSettings())  # two tiles, programmed once already
    for seed in (5, 6, 5):
        copied = fast_chip(program_chip(analog, DeviceSettings(), seed))
        in_place = fast_chip(program_chip(analog, DeviceSettings(), seed, in_place=True))
        assert copied.state_dict().keys() == in_place.state_dict().keys()
        for key, value in copied.state_dict().items():
            assert torch.equal(value, in_place.state_dict()[key]), key
    assert not torch.equal(fast_chip(program_chip(analog, DeviceSettings(), 7)).weight, copied.weight)


def test_segmenter_reads_fast_chips_by_default(small_model):
    x = torch.rand(1, 1, 64, 64)
    run = RunSettings(model=small_model.name, mode="analog", mc_samples=2, noise_level=0.0, drift_s=3600.0)
    fast, ref = Segmenter(small_model, run), Segmenter(small_model, run, simulator="aihwkit")
    assert any(isinstance(m, FastAnalogConv2d) for m in fast.chip(0).modules())
    assert not any(isinstance(m, FastAnalogConv2d) for m in ref.chip(0).modules())
    a, b = fast.predict(x, 3), ref.predict(x, 3)
    # ADC levels flipped by float summation order (which depends on the thread count other tests
    # leave) move a random, untrained network's outputs a little; the model as a whole agrees.
    # Exactness is held layer by layer and for a whole U-Net above.
    assert (a - b).abs().mean() < 0.02
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.98
    torch.testing.assert_close(fast.predict(x, 3), a)  # reads seeded per (seed, slice, sample)
    with pytest.raises(ValueError):
        Segmenter(small_model, run, simulator="gpu")


def test_the_exact_network_of_an_hwa_model_reads_as_aihwkit_reads_it(network, conv_path):
    """Perfect tile reads (an HWA model's digital mode): the learned input clipping and scales, no DAC,
    ADC, bounds or noise, so the fast layers give aihwkit's exact forward to float rounding."""
    net, images = network
    exact = to_analog(net, QUIET, exact=True)
    for tile in exact.analog_tiles():
        tile.input_range.data.fill_(0.5)  # tight enough that the clipping acts
    fast = fast_chip(exact)
    assert not any(hasattr(m, "analog_module") for m in fast.modules())
    with torch.no_grad():
        ref, out = exact(images[:2]), fast(images[:2])
    # float rounding, which the normalisations of U-Net++ and Swin-UNETR amplify to about 3e-4
    assert (out - ref).abs().max() < 1e-3 * ref.abs().max()
    assert torch.equal(out.argmax(1), ref.argmax(1))
