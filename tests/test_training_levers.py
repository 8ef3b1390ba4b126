"""The training levers of round 2 (issue 14): 2.5D input, input size, strong augmentation, Dice + focal,
and the failure analysis, on the bundled LGG sample (fast: small inputs, one epoch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.preprocessing import Preprocessing, get_slice, input_slices


def test_input_slices_stack_the_neighbours_in_order_and_repeat_the_ends():
    volume = np.arange(4 * 3 * 5, dtype=np.float32).reshape(4, 3, 5)  # 5 axial slices
    flat = input_slices(volume, "axial", 2, Preprocessing())
    assert flat.shape == (1, 3, 4) and np.array_equal(flat[0], get_slice(volume, "axial", 2))
    prep = Preprocessing(in_channels=3, context=1)
    middle = input_slices(volume, "axial", 2, prep)
    assert [np.array_equal(middle[c], get_slice(volume, "axial", k)) for c, k in enumerate((1, 2, 3))] == [
        True
    ] * 3
    first, last = input_slices(volume, "axial", 0, prep), input_slices(volume, "axial", 4, prep)
    assert np.array_equal(first[0], first[1]) and np.array_equal(first[2], get_slice(volume, "axial", 1))
    assert np.array_equal(last[2], last[1]) and np.array_equal(last[0], get_slice(volume, "axial", 3))


def test_a_2_5d_case_pairs_each_label_with_its_own_slice_in_the_middle_channel(tiny_lgg):
    from training.data import load_volume_case, read_msd

    case = read_msd(tiny_lgg)[0]
    flat_x, flat_y = load_volume_case(case, Preprocessing(input_size=(64, 64)))
    x, y = load_volume_case(case, Preprocessing(input_size=(64, 64), in_channels=5, context=2))
    assert x.shape == (len(flat_x), 5, 64, 64) and np.array_equal(y, flat_y)
    assert np.allclose(x[:, 2], flat_x[:, 0])
    assert np.allclose(x[3:, 0], flat_x[1:-2, 0]) and np.allclose(x[:-1, 3], flat_x[1:, 0])


def test_strong_augmentation_moves_image_and_label_together_and_keeps_labels_binary():
    from training.data import augmentations

    t = augmentations(0, "strong")
    image = torch.zeros(3, 64, 64)
    image[:, 10:30, 5:20] = 1.0  # a bright square, its mask below, in every channel
    label = (image[:1] > 0.5).float()
    moved_any = False
    for _ in range(30):
        d = t({"image": image.clone(), "label": label.clone()})
        im, lab = torch.as_tensor(d["image"]), torch.as_tensor(d["label"])
        assert set(torch.unique(lab.round()).tolist()) <= {0.0, 1.0}
        inside, outside = im[1][lab[0] > 0.5], im[1][lab[0] < 0.5]
        if inside.numel() > 20:  # the bright square stays under its (moved) mask
            assert inside.mean() > outside.mean() + 0.3
        moved_any |= not torch.equal(lab, label)
    assert moved_any
    with pytest.raises(ValueError, match="augmentation"):
        augmentations(0, "wild")


def test_patches_are_cut_from_the_slice_with_their_labels_and_around_the_lesion_as_asked():
    from training.data import SliceDataset

    x = np.arange(2 * 64 * 64, dtype=np.float32).reshape(2, 1, 64, 64)  # every pixel tells where it came from
    y = np.zeros((2, 64, 64), np.int64)
    y[:, 50:54, 2:6] = 1  # a small lesion near a corner
    data = SliceDataset({"a": (x, y)}, ["a"], augment=False, crop=24, foreground_fraction=1.0)
    for i in range(40):
        px, py = data[i % 2]
        assert px.shape == (1, 24, 24) and py.shape == (24, 24)
        s, r, q = np.unravel_index(int(px[0, 0, 0]), (2, 64, 64))
        assert np.array_equal(px[0].numpy(), x[s, 0, r : r + 24, q : q + 24])
        assert np.array_equal(py.numpy(), y[s, r : r + 24, q : q + 24])
        assert py.any()  # always around the lesion at foreground_fraction 1
    anywhere = SliceDataset({"a": (x, y)}, ["a"], augment=False, crop=24, foreground_fraction=0.0)
    assert not all(anywhere[i % 2][1].any() for i in range(40))
    with pytest.raises(ValueError, match="crop"):
        SliceDataset({"a": (x, y)}, ["a"], augment=False, crop=65)


def test_a_loader_worker_gives_the_batches_of_the_in_process_loader_epoch_after_epoch():
    """The worker keeps the dataset's random state from one epoch to the next (persistent): a worker
    restarted every epoch would replay the first epoch's augmentations."""
    from training.data import SliceDataset
    from training.train import training_loader

    rng = np.random.default_rng(0)
    x = rng.random((12, 3, 48, 48), dtype=np.float32)
    y = (rng.random((12, 48, 48)) > 0.8).astype(np.int64)

    def epochs(workers: int) -> list[torch.Tensor]:
        data = SliceDataset({"a": (x, y)}, ["a"], augment=True, strength="strong", crop=32)
        loader = training_loader(data, 4, seed=0, workers=workers)
        return [torch.cat([b for b, _ in loader]) for _ in range(2)]

    in_process, worker = epochs(0), epochs(1)
    assert not torch.equal(in_process[0], in_process[1])
    for a, b in zip(in_process, worker, strict=True):
        assert torch.equal(a, b)


def test_loss_choices():
    from monai.losses import DiceCELoss, DiceFocalLoss

    from training.train import loss_function

    assert isinstance(loss_function("dicece"), DiceCELoss) and isinstance(
        loss_function("dicefocal"), DiceFocalLoss
    )
    logits, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 1, 8, 8))
    assert float(loss_function("dicefocal")(logits, target)) > 0
    with pytest.raises(ValueError):
        loss_function("l2")


def test_a_2_5d_model_trains_with_the_levers_records_them_and_the_pipeline_feeds_it_neighbours(
    tiny_lgg, tmp_path
):
    from engine.inference import Segmenter
    from engine.model_store import read_spec
    from engine.pipeline import segment_volume
    from engine.preprocessing import normalise_volume, to_model_input
    from engine.run_settings import RunSettings
    from engine.volume import load_scan
    from training.train import train

    out = tmp_path / "models" / "tiny_unet_25d"
    train(
        tiny_lgg,
        "unet",
        "digital",
        out,
        epochs=1,
        batch_size=8,
        runs_dir=tmp_path / "runs",
        log=lambda *_: None,
        size=32,
        context=1,
        augment="strong",
        loss="dicefocal",
        crop=16,
    )
    spec = read_spec(out)
    assert spec.preprocessing.input_size == (32, 32) and spec.preprocessing.context == 1
    assert spec.preprocessing.in_channels == 3 and spec.arguments["in_channels"] == 3
    assert spec.training["loss"] == "DiceFocal" and spec.training["augmentation"] == "strong"
    assert spec.training["patch"] == 16 and spec.training["patch_foreground"] == pytest.approx(1 / 3)
    from training.postprocessing import WINDOW_MIN_GAIN

    tried = spec.metrics["val"]["sliding_window"]  # trained on patches: reading by windows was tried
    assert tried["window"] == [16, 16]
    adopted = tried["dice_windows"] >= tried["dice_whole"] + WINDOW_MIN_GAIN
    assert spec.sliding_window == ((16, 16) if adopted else None)

    volume = load_scan(tiny_lgg / "imagesTr" / "lgg_0.nii.gz")
    result = segment_volume(
        Segmenter(
            spec,
            RunSettings(model=spec.name, mode="digital", mc_samples=1, noise_level=0.0, drift_s=0.0, seed=0),
        ),
        volume,
    )
    # slice 5 by hand: slices 4, 5, 6 as channels, the network, back to the slice's size
    data = normalise_volume(volume.data, spec.preprocessing)
    from engine.model_store import load_digital

    net = load_digital(spec).eval()
    x = to_model_input(np.stack([get_slice(data, "axial", k) for k in (4, 5, 6)])[None], spec.preprocessing)
    with torch.no_grad():
        if spec.sliding_window:
            from monai.inferers import sliding_window_inference

            probs = torch.softmax(sliding_window_inference(x, spec.sliding_window, 9, net, overlap=0.25), 1)
        else:
            probs = torch.softmax(net(x), 1)
    from engine.preprocessing import resize_probabilities

    expected = resize_probabilities(probs, get_slice(data, "axial", 5).shape)[0, 1].numpy()
    got = get_slice(result.foreground_probability(), "axial", 5)
    assert np.allclose(got, expected, atol=1e-4)
    # one slice alone cannot feed it; the slice with its neighbours gives the pipeline's answer
    from engine.pipeline import segment_slice
    from engine.preprocessing import input_slices

    segmenter = Segmenter(
        spec, RunSettings(model=spec.name, mode="digital", mc_samples=1, noise_level=0.0, drift_s=0.0, seed=0)
    )
    with pytest.raises(ValueError, match="neighbouring"):
        segment_slice(segmenter, get_slice(data, "axial", 5), 5)
    alone = segment_slice(segmenter, input_slices(data, "axial", 5, spec.preprocessing), 5)
    assert np.allclose(alone.probabilities[1], expected, atol=1e-4)

    # the run's best checkpoint, looked at while training, is the network that was saved
    from training.failure_analysis import snapshot_model

    snap = snapshot_model(tmp_path / "runs" / "tiny_unet_25d", tmp_path / "snap")
    assert snap.preprocessing == spec.preprocessing and snap.keep_largest == [1]
    assert snap.data["split"] == spec.data["split"]
    with torch.no_grad():
        assert torch.allclose(load_digital(snap).eval()(x), net(x), atol=2e-2)


def test_a_further_round_keeps_its_base_input(tiny_lgg, tmp_path):
    from training.train import train

    with pytest.raises(ValueError, match="keeps its base"):
        train(
            tiny_lgg,
            "unet",
            "digital",
            tmp_path / "m",
            init="lgg_unet_digital",
            epochs=1,
            runs_dir=tmp_path,
            log=lambda *_: None,
            context=1,
        )


def test_failure_analysis_names_false_regions_missed_lesions_and_end_slices():
    from training.failure_analysis import case_errors

    truth = np.zeros((20, 20, 10), np.int64)
    truth[2:6, 2:6, 3:7] = 1  # a lesion on slices 3-6
    truth[15:17, 15:17, 5] = 1  # a small second lesion
    pred = np.zeros_like(truth)
    pred[2:6, 2:6, 4:7] = 1  # misses the lesion's first slice and the small lesion
    pred[10:12, 2:4, 8:10] = 1  # a false region on slices without lesion
    image = np.random.default_rng(0).random(truth.shape).astype(np.float32)
    e = case_errors(pred, truth, image)
    assert e["truth_components"] == 2 and e["missed_lesions"] == 1 and e["missed_lesion_voxels"] == 4
    assert e["false_regions"] == 1 and e["largest_false_region"] == 8 and e["false_slices"] == 2
    assert e["missed_slices"] == 1 and e["missed_end_slices"] == 1
    assert e["fn_voxels"] == 16 + 4 and e["fp_voxels"] == 8
    assert e["dice"] == pytest.approx(2 * 48 / (2 * 48 + 8 + 20))
    with pytest.raises(ValueError, match="validation"):
        from training.failure_analysis import analyse

        analyse("lgg_unet_digital", Path("."), split="test")


def test_flip_averaging_is_the_mean_of_the_scan_and_its_mirror_and_left_right_equivariant(small_model):
    """A flip-averaging model's probabilities are those of the scan and of its mirror image (mirrored
    back), averaged: the ensemble measured on validation. Mirroring the scan mirrors its labels.

    The flip is along canonical axis 0, the display's columns (the patient's left-right)."""
    import dataclasses

    from engine.inference import Segmenter
    from engine.pipeline import segment_volume
    from engine.run_settings import RunSettings
    from engine.volume import Volume

    rng = np.random.default_rng(0)
    data = rng.random((48, 40, 3)).astype(np.float32)
    data[5:20, 10:30] += 2.0  # something asymmetric to segment
    run = RunSettings(
        model=small_model.name, mode="digital", mc_samples=1, noise_level=0.0, drift_s=0.0, seed=0
    )
    plain = Segmenter(small_model, run)
    flipping = Segmenter(dataclasses.replace(small_model, flip_average=True), run)

    def volume(d: np.ndarray) -> Volume:
        return Volume(np.ascontiguousarray(d), np.eye(4))

    by_hand = (
        segment_volume(plain, volume(data)).probabilities
        + segment_volume(plain, volume(data[::-1])).probabilities[::-1]
    ) / 2
    averaged = segment_volume(flipping, volume(data))
    np.testing.assert_allclose(averaged.probabilities, by_hand, atol=1e-5)
    labels, mirrored = averaged.segmentation, segment_volume(flipping, volume(data[::-1])).segmentation
    assert labels.shape == data.shape and labels.any() and not labels.all()
    assert np.array_equal(mirrored, labels[::-1])
    assert not np.allclose(averaged.probabilities, segment_volume(plain, volume(data)).probabilities)


def test_a_flip_averaged_chip_read_gives_the_mirror_its_own_noise_and_the_same_result_in_any_batch(
    small_model,
):
    import dataclasses

    import torch

    from engine.inference import Segmenter
    from engine.run_settings import RunSettings

    run = RunSettings(
        model=small_model.name, mode="analog", mc_samples=2, noise_level=1.0, drift_s=3600.0, seed=3
    )
    segmenter = Segmenter(dataclasses.replace(small_model, flip_average=True), run)
    x = torch.from_numpy(np.random.default_rng(1).random((2, 1, 64, 64), dtype=np.float32))
    both = segmenter.predict_batch(x, [4, 7])
    np.testing.assert_allclose(both[1], segmenter.predict(x[1:], 7), atol=1e-6)
    np.testing.assert_allclose(both[0], segmenter.predict(x[:1], 4), atol=1e-6)
    half = x[:1, ..., :32]
    symmetric = torch.cat([half, half.flip(-1)], -1)  # a slice that is its own mirror
    exact = Segmenter(segmenter.spec, dataclasses.replace(run, mode="digital", mc_samples=1))
    read = exact.predict(symmetric, 4)
    torch.testing.assert_close(read, read.flip(-1))  # averaged with its mirror: symmetric
    read = segmenter.predict(symmetric, 4)
    assert not torch.allclose(read, read.flip(-1), atol=1e-4)  # on a chip, two reads with two noises


def test_architecture_widths_can_be_set_for_a_new_model(tiny_lgg, tmp_path):
    from engine.model_store import load_digital, read_spec
    from training.train import train

    out = tmp_path / "models" / "tiny_unetpp"
    features = [4, 4, 8, 8, 16, 4]
    train(
        tiny_lgg,
        "unetpp",
        "digital",
        out,
        epochs=1,
        batch_size=8,
        runs_dir=tmp_path / "runs",
        log=lambda *_: None,
        size=32,
        arch_arguments={"features": features},
    )
    spec = read_spec(out)
    assert spec.arguments["features"] == features and spec.arguments["upsample"] == "nontrainable"
    assert load_digital(spec).conv_0_0.conv_0.conv.out_channels == 4


def test_a_run_has_plateaued_when_no_new_best_came_for_patience_epochs():
    from training.train import plateaued

    run = [{"val_dice": v} for v in (0.5, 0.7, 0.69, 0.7, 0.68)]
    assert plateaued(run, 3) and not plateaued(run, 4) and not plateaued(run, None)
    assert not plateaued(run + [{"val_dice": 0.71}], 3)
    assert not plateaued(run[:3], 3)  # too short to tell


def _window_runs(small_model):
    from engine.run_settings import RunSettings

    analog = RunSettings(
        model=small_model.name, mode="analog", mc_samples=2, noise_level=1.0, drift_s=3600.0, seed=3
    )
    digital = RunSettings(model=small_model.name, mode="digital", mc_samples=1, noise_level=0.0, drift_s=0.0)
    return analog, digital


@pytest.mark.parametrize("flip", [False, True])
def test_a_window_the_size_of_the_slice_reads_as_the_whole_slice_digitally_and_on_a_chip(small_model, flip):
    import dataclasses

    from engine.inference import Segmenter

    x = torch.from_numpy(np.random.default_rng(2).random((2, 1, 64, 64), dtype=np.float32))
    plain_spec = dataclasses.replace(small_model, flip_average=flip)
    windowed_spec = dataclasses.replace(plain_spec, sliding_window=(64, 64))
    for run in _window_runs(small_model):
        whole = Segmenter(plain_spec, run).predict_batch(x, [4, 7])
        torch.testing.assert_close(Segmenter(windowed_spec, run).predict_batch(x, [4, 7]), whole)


def test_a_windowed_read_blends_the_networks_reads_of_overlapping_windows(small_model):
    """64 wide by 32 windows at overlap 0.25: windows start at 0, 24 and 32, so pixels 0-23 of each
    axis are seen by the first window only, and the rest by two or more."""
    import dataclasses

    from engine.inference import Segmenter

    _, run = _window_runs(small_model)
    x = torch.from_numpy(np.random.default_rng(2).random((1, 1, 64, 64), dtype=np.float32))
    windowed = Segmenter(dataclasses.replace(small_model, sliding_window=(32, 32)), run).predict(x, 0)[0]
    whole = Segmenter(small_model, run).predict(x, 0)[0]
    net = Segmenter(small_model, run).digital
    with torch.no_grad():
        corner = torch.softmax(net(x[..., :32, :32]), 1)[0]
        far = torch.softmax(net(x[..., 32:, 32:]), 1)[0]
    torch.testing.assert_close(windowed[:, :24, :24], corner[:, :24, :24])
    assert not torch.allclose(windowed[:, :24, :24], whole[:, :24, :24], atol=1e-4)
    # the last 8 pixels of each axis are also seen by the window at 24: a blend, not the far window alone
    assert not torch.allclose(windowed[:, 32:, 32:], far, atol=1e-4)
    torch.testing.assert_close(windowed.sum(0), torch.ones(64, 64))


def test_a_windowed_chip_read_gives_each_window_its_own_noise_and_the_same_result_in_any_batch(small_model):
    import dataclasses

    from engine.inference import Segmenter, window_seed, windowed

    run, _ = _window_runs(small_model)
    segmenter = Segmenter(dataclasses.replace(small_model, sliding_window=(32, 64), flip_average=True), run)
    x = torch.from_numpy(np.random.default_rng(1).random((2, 1, 64, 64), dtype=np.float32))
    both = segmenter.predict_batch(x, [4, 7])
    torch.testing.assert_close(both[1], segmenter.predict(x[1:], 7))
    torch.testing.assert_close(both[0], segmenter.predict(x[:1], 4))
    assert not torch.allclose(both[0, 0], both[0, 1], atol=1e-4)  # two chips
    # each slice's windows are read in one batch, window w with its own seed
    seen: list[tuple[int, list[int]]] = []

    def read(batch: torch.Tensor, seeds) -> torch.Tensor:
        seen.append((len(batch), list(seeds)))
        return batch.repeat(1, 2, 1, 1)

    out = windowed(read, x, [11, 12], (32, 64))
    assert out.shape == (2, 2, 64, 64) and torch.allclose(out[:, :1], x)  # an identity read blends to x
    assert seen == [(3, [window_seed(11, w) for w in range(3)]), (3, [window_seed(12, w) for w in range(3)])]
    assert len({window_seed(11, w) for w in range(9)} | {window_seed(12, w) for w in range(9)}) == 18
    assert window_seed(11, 0) == 11


def test_model_json_keeps_the_window_and_refuses_one_larger_than_the_slice(small_model):
    import dataclasses

    from engine.model_store import ModelSpec, validate_description

    windowed = dataclasses.replace(small_model, sliding_window=(32, 48))
    validate_description(windowed.to_dict())
    assert ModelSpec.from_dict(windowed.to_dict()).sliding_window == (32, 48)
    assert "sliding_window" not in small_model.to_dict()["inference"]  # old model.json files unchanged
    assert ModelSpec.from_dict(small_model.to_dict()).sliding_window is None
    inference = windowed.to_dict()["inference"]
    for wrong, said in (
        ([32, 96], "larger than the input size"),
        ([32], "sliding_window"),
        ("32", "sliding"),
    ):
        with pytest.raises(ValueError, match=said):
            validate_description({**windowed.to_dict(), "inference": {**inference, "sliding_window": wrong}})
