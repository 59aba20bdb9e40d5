"""The sprite feature net (asset, training, split by sprite), FD/KID through torchmetrics, precision/recall,
and the validation that the feature space sees damage (docs/metric.md)."""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from spritediff.cli import main
from spritediff.errors import SpriteDiffError
from spritediff.features import (DEFAULT_FEATURES, FeatureTrainConfig, held_out_split, load_features, sprite_groups,
                                 train_feature_net)
from spritediff.metrics import SpriteQuality, class_accuracy, coverage, frechet_distance, knn_radii
from spritediff.disturbances import gaussian_noise
from spritediff.sprites import COURSE_CLASSES as CLASSES
from spritediff.validation import LEVELS, disturbance_curves, rises


ASSET_MIN_ACCURACY = 0.92  # measured 0.949 on all 1,788 base sprites, less a margin
ASSET_MIN_HELD_OUT_ACCURACY = 0.83  # measured 0.857 on the 356 sprites never trained on, less a margin


@pytest.fixture(scope="module")
def features():
    return load_features()


@pytest.fixture(scope="module")
def sprites(sprites_dir):
    images = np.load(sprites_dir / "sprites_base1788_16x16.npy")
    labels = np.load(sprites_dir / "sprite_labels_base1788.npy")
    return images, labels


def random_sprites(n, seed=0):
    """n random 16x16 uint8 images: a coloured 10x8 block on black, like a sprite's layout."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 16, 16, 3), dtype=np.uint8)
    images[:, 3:13, 4:12] = rng.integers(0, 256, (n, 10, 8, 3), dtype=np.uint8)
    return images


def add_noise(images, sigma, seed=0):
    noise = np.random.default_rng(seed).normal(0, sigma, images.shape)
    return np.clip(images + noise, 0, 255).round().astype(np.uint8)


def blur(images):
    """3x3 binomial blur per channel, edges replicated."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None] / 16).expand(3, 1, 3, 3)
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def sqrt_psd(s):
    values, vectors = np.linalg.eigh(s)
    return (vectors * np.sqrt(values.clip(0))) @ vectors.T


def reference_fd(a, b):
    """Fréchet distance of two (N,D) feature sets by numpy: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2).

    tr (S1 S2)^1/2 = tr (S1^1/2 S2 S1^1/2)^1/2, a symmetric route (torchmetrics takes eigenvalues of S1 S2).
    """
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root1 = sqrt_psd(s1)
    cross = np.trace(sqrt_psd(root1 @ s2 @ root1))
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


# --- FD and KID ------------------------------------------------------------------------------------


def test_fd_matches_scipy_on_the_same_features_and_is_symmetric(features):
    a, b = random_sprites(300, seed=1), blur(random_sprites(200, seed=2))
    expected = reference_fd(features.features(a).numpy(), features.features(b).numpy())
    assert frechet_distance(features, a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(features, b, a) == pytest.approx(expected, rel=1e-6)
    assert expected > 0.1  # the real sprites' features have trace 5 (1 a block): two unlike sets are far apart


def test_fd_of_a_set_with_itself_is_zero(features):
    a = random_sprites(300)
    scale = np.trace(np.cov(features.features(a).numpy(), rowvar=False))
    assert abs(frechet_distance(features, a, a)) < 1e-6 * scale


@pytest.mark.slow
def test_fd_and_kid_grow_as_real_sprites_are_degraded(features, sprites):
    images = sprites[0]
    quality = SpriteQuality(features, images, kid_subsets=10)
    same = quality.score(images)
    assert abs(same["fd"]) < 1e-6 and abs(same["kid"]) < 3 * same["kid_std"]  # KID: subsets differ, so noisy
    fds = [quality.score(add_noise(images, sigma))["fd"] for sigma in (5, 20, 40)]
    assert 0 < fds[0] < fds[1] < fds[2]
    blurred = quality.score(blur(images))
    assert blurred["fd"] > fds[1] and blurred["kid"] > 3 * blurred["kid_std"]


def test_kid_is_reproducible_and_leaves_the_global_rng_alone(features):
    a, b = random_sprites(120, seed=1), random_sprites(100, seed=2)
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    first = SpriteQuality(features, a, seed=3).score(b)
    assert torch.rand(1) == before
    assert SpriteQuality(features, a, seed=3).score(b) == first


# --- precision and recall --------------------------------------------------------------------------


def test_knn_radius_is_the_distance_to_the_kth_other_point():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    assert knn_radii(points, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(points, k=2).tolist() == [3.0, 2.0, 3.0, 6.0]
    # balls [-1, 1], [0, 2], [1, 5], [3, 11]: 0.5 and 5.5 are inside one, 12 is in none
    assert coverage(points, knn_radii(points, k=1), torch.tensor([[0.5], [5.5], [12.0]], dtype=torch.float64)) \
        == pytest.approx(2 / 3)
    assert coverage(points, knn_radii(points, k=1), torch.tensor([[11.5], [-1.5]], dtype=torch.float64)) == 0.0


@pytest.mark.slow
def test_precision_falls_with_poor_sprites_and_recall_with_too_few_kinds(features, sprites):
    images, labels = sprites
    quality = SpriteQuality(features, images, kid_subsets=5)
    same = quality.score(images)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    noisy = quality.score(gaussian_noise(images, 1.0))  # noise of 64 levels: poor sprites, off the real manifold
    assert noisy["precision"] < 0.8 and noisy["fd"] > 0.1
    one_class = quality.score(images[labels.argmax(1) == 2])  # food only: every sprite real, few kinds
    assert one_class["precision"] == 1.0 and one_class["recall"] < 0.4


# --- the validation: the features see damage (Heusel et al. 2017, Fig. 1) ---------------------------


@pytest.fixture(scope="module")
def curves(features, sprites):
    images = sprites[0][::3]  # 596 sprites: enough for the ordering, small enough for CI
    return disturbance_curves(features, images, images, kid_subsets=5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gaussian noise", "blur", "colour jitter", "salt and pepper", "swapped patches",
                                  "palette noise"])
def test_fd_rises_with_every_kind_of_damage(curves, name):
    fds = [score["fd"] for score in curves[name]]
    assert len(fds) == len(LEVELS) and abs(fds[0]) < 1e-6
    assert rises(fds), fds


@pytest.mark.parametrize("name", ["gaussian noise", "blur", "salt and pepper", "palette noise"])
def test_precision_falls_as_the_sprites_are_damaged(curves, name):
    precisions = [score["precision"] for score in curves[name]]
    assert precisions[0] == 1.0 and precisions[-1] < 0.9 and precisions == sorted(precisions, reverse=True)


def asset_held_out_rows(features, images, labels) -> np.ndarray:
    """Indices of the base sprites the shipped feature net never trained on: the split its file records."""
    config = features.info["config"]
    held = held_out_split(sprite_groups(images), labels.argmax(1), config["held_out"], features.info["seed"])
    assert held.sum() == features.info["held_out"]["rows"]  # the very split the asset was trained without
    return np.nonzero(held)[0]


def test_class_accuracy_scores_the_asked_for_class(features, sprites):
    """Scored on held-out sprites only (no mirror image or near-copy of them was trained on), so the accuracy is
    the net's generalisation, not its memory of the training rows."""
    images, labels = sprites
    rows = asset_held_out_rows(features, images, labels)
    contexts = torch.from_numpy(labels[rows]).float()
    accuracy = class_accuracy(features, images[rows], contexts, CLASSES)
    assert accuracy > ASSET_MIN_HELD_OUT_ACCURACY
    assert accuracy == pytest.approx(features.info["held_out"]["accuracy"], abs=5e-5)  # as recorded at training
    shuffled = contexts.roll(1, dims=1)  # asks for the wrong class everywhere
    assert class_accuracy(features, images[rows], shuffled, CLASSES) < 0.2
    assert class_accuracy(features, images[rows], torch.zeros_like(contexts), CLASSES) is None


# --- the shipped feature net -----------------------------------------------------------------------


def test_asset_is_small_and_says_how_it_was_made():
    assert DEFAULT_FEATURES.stat().st_size < 1_300_000
    with safe_open(str(DEFAULT_FEATURES), framework="pt") as f:
        config = json.loads(f.metadata()["spritediff"])
    info = config["info"]
    assert config["net"]["arch"] == "SpriteFeatureNet" and config["classes"] == list(CLASSES)
    assert info["command"].startswith("spritediff train-features --data ")
    assert not any(word.startswith("/") for word in info["command"].split())  # no paths of one machine
    assert info["seed"] == 0 and ASSET_MIN_HELD_OUT_ACCURACY < info["held_out"]["accuracy"] <= 1
    assert info["credit"] == "Sprites by ElvGames, FrootsnVeggies and kyrise"


def test_asset_classifies_the_real_sprites(features, sprites):
    images, labels = sprites
    targets = labels.argmax(1)
    correct = features.predict(images) == targets
    assert correct.mean() > ASSET_MIN_ACCURACY
    # the recorded held-out accuracy is that of the stored (fp16) weights on the recorded split
    held = held_out_split(sprite_groups(images), targets, features.info["config"]["held_out"], features.info["seed"])
    assert correct[held].mean() > ASSET_MIN_HELD_OUT_ACCURACY
    assert held.sum() == features.info["held_out"]["rows"]
    assert round(float(correct[held].mean()), 4) == features.info["held_out"]["accuracy"]


def test_load_features_rejects_other_files(tmp_path, tiny_model_path):
    with pytest.raises(SpriteDiffError, match="format 'spritediff/1'"):
        load_features(tiny_model_path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SpriteDiffError, match="not a readable"):
        load_features(tmp_path / "junk.safetensors")


# --- the split by sprite ---------------------------------------------------------------------------


def test_split_keeps_mirror_pairs_and_duplicates_on_one_side(sprites):
    images, labels = sprites
    groups = sprite_groups(images)
    held = held_out_split(groups, labels.argmax(1), 0.2, seed=0)
    half = len(images) // 2
    assert np.array_equal(groups[:half], groups[half:])  # row i and its mirror image, row i + 894
    assert np.array_equal(held[:half], held[half:])
    _, first, inverse = np.unique(images.reshape(len(images), -1), axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    assert len(first) == 1722
    assert np.array_equal(groups, groups[first][inverse])  # identical images share a group, so a side
    assert 0.18 < held.mean() < 0.22
    for c in range(labels.shape[1]):  # stratified by class
        assert 0.15 < held[labels.argmax(1) == c].mean() < 0.25


def test_split_groups_synthetic_mirrors_duplicates_and_near_copies():
    images = random_sprites(40, seed=4)
    near = add_noise(images[:5], 3, seed=1)  # like the JPEG-rebuilt copies: a few levels off
    data = np.concatenate([images, images[:, :, ::-1], images[10:15], near[:, :, ::-1]])
    groups = sprite_groups(data)
    assert len(np.unique(groups)) == 40
    assert np.array_equal(groups[:40], groups[40:80])
    assert np.array_equal(groups[80:85], groups[10:15]) and np.array_equal(groups[85:90], groups[:5])
    held = held_out_split(groups, np.zeros(len(data), dtype=int), 0.25, seed=1)
    for g in np.unique(groups):
        assert len(set(held[groups == g])) == 1
    assert (held[:40]).sum() == 10
    sparse_ids = held_out_split(groups * 7 + 3, np.zeros(len(data), dtype=int), 0.25, seed=1)  # any group ids
    assert np.array_equal(sparse_ids, held)


# --- training --------------------------------------------------------------------------------------


def test_training_is_deterministic_given_the_seed():
    images = random_sprites(96, seed=5)
    labels = np.eye(5)[np.arange(96) % 5]
    config = FeatureTrainConfig(epochs=2, batch=32, width=4, n_features=8)
    a, b = (train_feature_net(images, labels, CLASSES, config) for _ in range(2))
    c = train_feature_net(images, labels, CLASSES, FeatureTrainConfig(epochs=2, batch=32, width=4, n_features=8,
                                                                      seed=1))
    for key, value in a.net.state_dict().items():
        assert torch.equal(value, b.net.state_dict()[key])
    assert not torch.equal(a.net.to_features.weight, c.net.to_features.weight)
    assert a.info["held_out"] == b.info["held_out"]


def test_train_features_command(tmp_path, capsys):
    images = random_sprites(60, seed=6)
    np.save(tmp_path / "x.npy", np.tile(np.concatenate([images, images[:, :, ::-1]]), (50, 1, 1, 1)))
    np.save(tmp_path / "y.npy", np.tile(np.eye(5)[np.arange(120) % 60 % 5], (50, 1)))
    out = tmp_path / "f.safetensors"
    assert main(["train-features", "--data", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--out", str(out), "--epochs", "1", "--width", "4", "--n-features", "8"]) == 0
    model = load_features(out)
    assert model.info["data"]["rows_used"] == 120  # the 50 tiled copies are read as one base set
    assert model.info["held_out"]["rows"] == 20 and model.features(images).shape == (60, 13 + 8 + 16 + 32 + 8)
    assert "held-out accuracy" in capsys.readouterr().out
    assert main(["train-features", "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "g.safetensors")]) == 2
    assert "--labels" in capsys.readouterr().err and not (tmp_path / "g.safetensors").exists()


# --- the validation on a model: more steps, visibly better sprites, a better score --------------------


@pytest.mark.slow
def test_the_shipped_model_scores_better_with_the_steps_that_make_it_look_better(features, sprites):
    """DDIM-1 sprites are blurred blobs, DDIM-2 soft, DDIM-20 crisp (docs/metric.md shows them): the
    metric must agree, and real held-out sprites must beat them all."""
    import spritediff
    from spritediff.evaluate import real_halves

    images, labels = sprites
    half_a, half_b = real_halves(images)
    quality = SpriteQuality(features, images[half_a], kid_subsets=5)
    model = spritediff.load()
    contexts = torch.from_numpy(labels[half_b][::4]).float()  # the real class mix
    scores = {steps: quality.score(spritediff.sample(model, "ddim", steps, n=len(contexts), context=contexts,
                                                     guidance=0.0, seed=0, frames=False).images)
              for steps in (1, 2, 20)}
    real = quality.score(images[half_b])
    assert real["fd"] < scores[20]["fd"] < scores[1]["fd"]
    assert scores[20]["precision"] > scores[2]["precision"] > scores[1]["precision"]


@pytest.mark.slow
def test_class_mix_gap_is_zero_for_the_real_mix_and_a_class_share_when_that_class_is_missing(features, sprites):
    """Dropping every sprite of one predicted class c from the real set leaves the others' shares in proportion, so
    the total variation distance to the real mix is exactly c's real share (0.5 (m + (1 - m) m / (1 - m)) = m)."""
    images, _ = sprites
    quality = SpriteQuality(features, images, kid_subsets=5)
    assert quality.score(images)["class_mix_gap"] == 0.0
    predicted = features.predict(images)
    for c in np.unique(predicted)[:2]:
        share = float(np.mean(predicted == c))
        scores = quality.score(images[predicted != c])
        assert scores["class_mix"][c] == 0.0 and sum(scores["class_mix"]) == pytest.approx(1.0)
        assert scores["class_mix_gap"] == pytest.approx(share, abs=1e-12)
