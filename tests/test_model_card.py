"""Model cards: a scan's statistics, the domain of training scans, their round trip through model.json."""

from __future__ import annotations

import numpy as np

from engine.model_card import ModelCard, Range, ScanStatistics, TrainingDomain
from engine.model_store import find_model
from engine.volume import Volume


def _volume(shape, spacing, values) -> Volume:
    return Volume(values.reshape(shape).astype(np.float32), np.diag([*spacing, 1.0]))


def test_statistics_of_a_known_volume():
    stats = ScanStatistics.of(_volume((4, 6, 3), (0.5, 0.5, 2.0), np.arange(72) - 10.0), "axial")
    assert stats.dimensionality == "3D" and stats.in_plane == (4, 6) and stats.slices == 3
    assert stats.in_plane_spacing == 0.5 and stats.slice_spacing == 2.0
    assert stats.negative_fraction == 10 / 72
    assert stats.quantiles[1] == np.percentile(np.arange(72) - 10.0, 50)
    assert ScanStatistics.of(_volume((5, 7, 1), (1, 1, 1), np.ones(35)), "axial").dimensionality == "2D"


def test_domain_spans_the_training_scans_and_round_trips():
    a = ScanStatistics("3D", (256, 256), 20, 1.0, 1.0, (0.0, 5.0, 200.0), 0.0)
    b = ScanStatistics("3D", (240, 200), 88, 0.9, 1.2, (1.0, 9.0, 120.0), 0.0)
    domain = TrainingDomain.of([a, b])
    assert domain.scans == 2 and domain.in_plane == Range(240, 256) and domain.slices == Range(20, 88)
    assert domain.quantiles[2] == Range(120.0, 200.0)
    card = ModelCard(
        modality="MR", body_part="BRAIN", dimensionality="3D", sequence="FLAIR", training_domain=domain
    )
    back = ModelCard.from_dict(card.to_dict())
    assert back == card and back.training_domain == domain


def test_shipped_models_carry_cards_measured_on_their_training_split():
    spec = find_model("lgg_unet_hwa")
    assert spec.card.modality == "MR" and spec.card.sequence == "FLAIR" and spec.card.dimensionality == "3D"
    assert spec.card.training_domain.scans == len(spec.data["split"]["train"])
    assert "FLAIR" in spec.card.summary()
    assert find_model("nuclei_unet_hwa").card.dimensionality == "2D"
