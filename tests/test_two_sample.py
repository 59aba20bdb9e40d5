"""The classifier two-sample test: at chance on one distribution, near 1 on two that differ, split by sprite."""
import numpy as np
import pytest

from spritediff.features import sprite_groups
from spritediff.two_sample import _group_halves, two_sample_test


def blobs(n: int, seed: int, brightness: tuple[int, int] = (0, 256), background: int = 0) -> np.ndarray:
    """n distinct 16x16 sprites: a rectangle of random size and colour on a plain background."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 16, 16, 3), background, dtype=np.uint8)
    for image in images:
        h, w = rng.integers(4, 12, 2)
        image[8 - h // 2:8 + h // 2, 8 - w // 2:8 + w // 2] = rng.integers(*brightness, 3)
    return images


def test_one_distribution_scores_chance_and_two_distributions_are_told_apart():
    real = blobs(160, 0, (0, 256))
    groups = np.arange(len(real))
    same = two_sample_test(blobs(160, 1), real, groups, steps=60)
    assert abs(same["accuracy"] - 0.5) < 4 * same["stderr"], same
    grey = two_sample_test(blobs(160, 1, background=40), real, groups, steps=60)  # a grey background
    assert grey["accuracy"] > 0.9, grey
    assert grey["test_size"] == 160 and len(grey["splits"]) == 2


def test_same_inputs_give_the_same_accuracy_and_other_seeds_other_splits():
    real, samples = blobs(64, 0, (0, 256)), blobs(64, 1, (0, 120))
    groups = np.arange(64)
    a, b = (two_sample_test(samples, real, groups, seed=0, steps=20) for _ in range(2))
    assert a == b
    assert two_sample_test(samples, real, groups, seed=5, steps=20)["splits"] != a["splits"]


def test_a_sprite_and_its_mirror_stay_on_one_side():
    base = blobs(40, 0, (0, 256))
    base[:, 2, 2] = 255  # off-centre, so every mirror image differs from its sprite
    images = np.concatenate([base, base[:, :, ::-1]])
    groups = sprite_groups(images)
    assert (groups[:40] == groups[40:]).all()  # each sprite shares its mirror's group
    first, second = _group_halves(images, groups, np.random.default_rng(0))
    keys = lambda half: {min(im.tobytes(), im[:, ::-1].tobytes()) for im in half}  # noqa: E731
    assert len(first) + len(second) == 80 and not keys(first) & keys(second)


def test_too_few_images_is_a_value_error():
    with pytest.raises(ValueError, match="at least 4"):
        two_sample_test(blobs(3, 0, (0, 256)), blobs(10, 1, (0, 256)), np.arange(10))
