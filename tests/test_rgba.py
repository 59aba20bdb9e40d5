"""RGBA pixel art: transparent PNGs and (N,H,W,4) arrays in, an RGBA model, samples and a grid that keep alpha.

The images are synthetic shapes drawn here (a coloured square or disc on a transparent background), never sprites.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import one_line_error, run

import spritediff
from spritediff.checkpoint import METADATA_KEY, SpriteModel, save_model
from spritediff.data import load_data, with_channels
from spritediff.errors import SpriteDiffError
from spritediff.models import ContextUnet
from spritediff.render import BORDER, CHECKER, denoise_frames, grid_image, tile
from spritediff.schedule import Schedule
from spritediff.train import TrainConfig, run_training, state_path


def metadata(path: Path) -> dict:
    """The spritediff JSON metadata of a model file."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[METADATA_KEY])


def shape_rgba(size: int, i: int) -> np.ndarray:
    """(size,size,4) uint8: a coloured square (even i) or disc (odd i) in the middle half, the rest transparent.

    The transparent pixels hold a stray colour (as editors leave behind), which reading must clear."""
    image = np.zeros((size, size, 4), np.uint8)
    image[..., :3] = (0, 255, 0)  # invisible: alpha 0 below
    rows, cols = np.indices((size, size))
    centre, radius = (size - 1) / 2, size / 4
    inside = (abs(rows - centre) <= radius) & (abs(cols - centre) <= radius) if i % 2 == 0 else \
        (rows - centre) ** 2 + (cols - centre) ** 2 <= radius ** 2
    image[inside] = (40 + 50 * i % 200, 200 - 30 * i % 150, 90, 255)
    return image


def write_pngs(folder: Path, n: int = 4, size: int = 32) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = [shape_rgba(size, i) for i in range(n)]
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    return images


# --- end to end: a folder of transparent 32x32 PNGs -> train -> sample ---------------------------------------------

def test_rgba_pngs_train_and_sample_with_transparency_end_to_end(tmp_path):
    write_pngs(tmp_path / "art", n=4)
    model_path = tmp_path / "art.safetensors"
    assert run(["train", "--data", tmp_path / "art", "--out", model_path, "--steps", 2, "--batch", 4,
                "--n-feat", 8, "--fp32"]) == 0
    model = spritediff.load(model_path)
    assert (model.net.in_channels, model.net.height) == (4, 32)  # the PNGs' transparency made it RGBA
    assert metadata(model_path)["net"] == {"arch": "ContextUnet", "in_channels": 4, "n_feat": 8, "n_cfeat": 0,
                                           "height": 32}

    out = tmp_path / "samples"
    assert run(["sample", "--model", model_path, "--n", 3, "--nrow", 3, "--steps", 2, "--seed", 1, "--out", out]) == 0
    samples = np.load(out / "samples.npy")
    assert samples.shape == (3, 32, 32, 4) and samples.dtype == np.uint8
    alpha = samples[..., 3]
    assert (alpha == 0).any() and (alpha == 255).any()  # a two-step model saturates: clear and solid pixels both

    grid = Image.open(out / "grid.png")
    assert grid.mode == "RGBA" and grid.size == (4 * (3 * 33 + 1), 4 * 34)
    pixels = np.asarray(grid)
    for i in range(3):  # each cell is its sample, alpha included, pixel for pixel
        cell = pixels[4 * 1:4 * 33, 4 * (1 + 33 * i):4 * (33 + 33 * i)]
        np.testing.assert_array_equal(cell[::4, ::4], samples[i])
    border = np.concatenate([pixels[:4].reshape(-1, 4), pixels[:, 4 * 33:4 * 34].reshape(-1, 4)])
    assert (border == (BORDER, BORDER, BORDER, 255)).all()  # the grid lines are opaque grey

    gif = Image.open(out / "denoise.gif")
    assert gif.n_frames == 3  # 2 steps + the final image
    gif.seek(gif.n_frames - 1)
    final = np.asarray(gif.convert("RGB"))[4:4 * 33, 4:4 * 33][::4, ::4]  # x_t half, first sprite, = the sample
    clear = final[samples[0, ..., 3] == 0].astype(int)  # (K, 3): where the sample is transparent
    nearest = np.abs(clear[:, :, None] - np.array(CHECKER)[None, None, :]).min(2)
    assert clear.size and nearest.max() <= 4  # the checkerboard shows through (GIF's palette may shift a level)
    assert json.loads((out / "run.json").read_text())["n"] == 3


# --- reading RGBA --------------------------------------------------------------------------------------------------

def test_a_folder_of_transparent_pngs_reads_as_rgba_without_labels(tmp_path):
    drawn = write_pngs(tmp_path / "art", n=3, size=16)
    data = load_data(tmp_path / "art")
    assert data.images.shape == (3, 16, 16, 4) and data.labels is None and data.classes == ()
    images = data.images.numpy()
    np.testing.assert_array_equal(images[..., 3], np.stack(drawn)[..., 3])  # alpha exactly as drawn
    assert (images[images[..., 3] == 0][:, :3] == 0).all()  # the stray colour under alpha 0 is cleared
    visible = images[..., 3] == 255
    np.testing.assert_array_equal(images[visible], np.stack(drawn)[visible])


def test_class_subfolders_of_transparent_pngs_keep_their_labels(tmp_path):
    write_pngs(tmp_path / "art" / "coins", n=2, size=16)
    write_pngs(tmp_path / "art" / "gems", n=1, size=16)
    data = load_data(tmp_path / "art")
    assert data.images.shape == (3, 16, 16, 4) and data.classes == ("coins", "gems")
    assert data.labels.argmax(1).tolist() == [0, 0, 1]


def test_mixed_rgb_and_rgba_pngs_become_rgba_with_opaque_rgb_images(tmp_path):
    write_pngs(tmp_path / "art", n=1, size=16)
    Image.fromarray(np.full((16, 16, 3), 77, np.uint8)).save(tmp_path / "art" / "tile.png")  # an RGB file
    data = load_data(tmp_path / "art")
    assert data.images.shape == (2, 16, 16, 4)
    tile_image = data.images[1].numpy()
    assert (tile_image[..., :3] == 77).all() and (tile_image[..., 3] == 255).all()


def test_palette_pngs_with_a_transparent_index_read_as_rgba(tmp_path):
    (tmp_path / "art").mkdir()
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    image.paste(1, (2, 2, 6, 6))
    image.save(tmp_path / "art" / "p.png", transparency=0)
    images = load_data(tmp_path / "art").images.numpy()
    assert images.shape == (1, 8, 8, 4)
    assert (images[0, 2:6, 2:6] == (200, 30, 30, 255)).all() and images[0, 0, 0, 3] == 0


def test_rgba_files_that_are_fully_opaque_stay_rgb(tmp_path):
    """Some editors always save an alpha channel: with nothing transparent, auto reads RGB (and --channels 4 RGBA)."""
    (tmp_path / "art").mkdir()
    opaque = np.full((8, 8, 4), 120, np.uint8)
    opaque[..., 3] = 255
    Image.fromarray(opaque).save(tmp_path / "art" / "a.png")
    assert load_data(tmp_path / "art").images.shape == (1, 8, 8, 3)
    assert load_data(tmp_path / "art", channels=4).images.shape == (1, 8, 8, 4)


def test_channels_3_flattens_transparency_onto_black(tmp_path):
    (tmp_path / "art").mkdir()
    image = np.zeros((8, 8, 4), np.uint8)
    image[..., :3] = 200
    image[:, :4, 3] = 255
    image[:, 4:6, 3] = 128  # half covered: 200 * 128 / 255 = 100.4
    Image.fromarray(image).save(tmp_path / "art" / "a.png")
    flat = load_data(tmp_path / "art", channels=3).images.numpy()[0]
    assert flat.shape == (8, 8, 3)
    assert (flat[:, :4] == 200).all() and (flat[:, 4:6] == 100).all() and (flat[:, 6:] == 0).all()


def test_an_rgba_array_keeps_its_channels_and_an_rgb_one_gets_alpha_with_channels_4(tmp_path):
    rgba = np.stack([shape_rgba(16, i) for i in range(2)])
    np.save(tmp_path / "rgba.npy", rgba)
    images = load_data(tmp_path / "rgba.npy").images.numpy()
    assert images.shape == (2, 16, 16, 4)
    np.testing.assert_array_equal(images[..., 3], rgba[..., 3])
    assert (images[rgba[..., 3] == 0] == 0).all()
    opaque = np.full((2, 16, 16, 4), 255, np.uint8)
    np.save(tmp_path / "opaque.npy", opaque)
    assert load_data(tmp_path / "opaque.npy").images.shape == (2, 16, 16, 4)  # an array says what it is
    np.save(tmp_path / "rgb.npy", rgba[..., :3])
    assert load_data(tmp_path / "rgb.npy").images.shape == (2, 16, 16, 3)
    with_alpha = load_data(tmp_path / "rgb.npy", channels=4).images.numpy()
    assert with_alpha.shape == (2, 16, 16, 4) and (with_alpha[..., 3] == 255).all()


def test_with_channels_rounds_and_leaves_rgb_untouched():
    rgb = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(1, 2, 2, 3)
    assert with_channels(rgb, "auto") is rgb and with_channels(rgb, 3) is rgb
    rgba = np.array([[[[255, 255, 255, 1], [10, 20, 30, 255]]]], np.uint8)
    np.testing.assert_array_equal(with_channels(rgba, 3), [[[[1, 1, 1], [10, 20, 30]]]])


# --- errors --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case, words", [
    ("two_channels", ["expected (N,H,H,3) RGB or (N,H,H,4) RGBA images", "(4, 16, 16, 2)"]),
    ("bad_choice", ["argument --channels", "invalid choice: '2'"]),
    ("empty_folder", ["has no images"]),
    ("mixed_sizes", ["differ in size"]),
])
def test_bad_rgba_data_is_one_line_before_training(tmp_path, capsys, case, words):
    data, extra = tmp_path / "x.npy", []
    np.save(data, np.zeros((4, 16, 16, 2 if case == "two_channels" else 4), np.uint8))
    if case == "bad_choice":
        extra = ["--channels", "2"]
    elif case == "empty_folder":
        data = tmp_path / "art"
        data.mkdir()
    elif case == "mixed_sizes":
        data = tmp_path / "art"
        write_pngs(data, n=1, size=16)
        Image.fromarray(shape_rgba(8, 0)).save(data / "small.png")
    out = tmp_path / "m.safetensors"
    assert run(["train", "--data", data, "--out", out, "--steps", 1, "--n-feat", 8, *extra]) == 2
    one_line_error(capsys, *words)
    assert not out.exists() and not state_path(out).exists()


def test_load_data_refuses_an_unknown_channel_count(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 3), np.uint8))
    for channels in (2, "rgba", True, 3.0):
        with pytest.raises(SpriteDiffError, match="--channels must be auto, 3"):
            load_data(tmp_path / "x.npy", channels=channels)


def test_resume_with_data_of_other_channels_is_one_line(tmp_path, capsys):
    rgba = np.stack([shape_rgba(16, i) for i in range(4)])
    np.save(tmp_path / "rgba.npy", rgba)
    out = tmp_path / "m.safetensors"

    def train(steps, *extra):
        return run(["train", "--data", tmp_path / "rgba.npy", "--out", out, "--steps", steps, "--batch", 4,
                    "--n-feat", 8, *extra])

    assert train(2) == 0
    capsys.readouterr()
    assert train(3, "--channels", 3, "--resume") == 2  # the same file, flattened to RGB: not the run's data
    one_line_error(capsys, "cannot resume", "16x16 RGBA images", "this data is 16x16 RGB")
    assert train(3, "--resume") == 0


def test_resume_through_the_api_checks_the_image_size_too(tmp_path):
    np.save(tmp_path / "a.npy", np.stack([shape_rgba(16, i) for i in range(4)]))
    np.save(tmp_path / "b.npy", np.stack([shape_rgba(32, i) for i in range(4)]))
    out = tmp_path / "m.safetensors"
    config = dict(batch=4, n_feat=8)
    run_training(TrainConfig(steps=1, **config), load_data(tmp_path / "a.npy"), out, torch.device("cpu"),
                 progress=False)
    with pytest.raises(SpriteDiffError, match="16x16 RGBA images, this data is 32x32 RGBA"):
        run_training(TrainConfig(steps=2, **config), load_data(tmp_path / "b.npy"), out, torch.device("cpu"),
                     resume=True, progress=False)


def test_a_model_file_claiming_five_channels_is_refused(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_model(SpriteModel(ContextUnet(4, 8, 5, 16), Schedule.course(), ("a", "b", "c", "d", "e")), path)
    assert spritediff.load(path).net.in_channels == 4
    config = metadata(path)
    config["net"]["in_channels"] = 5
    save_file(load_file(str(path)), str(path), metadata={METADATA_KEY: json.dumps(config)})
    assert run(["sample", "--model", path, "--out", tmp_path / "o"]) == 2
    one_line_error(capsys, "net.in_channels must be an integer in 3..4, got 5")


# --- pictures ------------------------------------------------------------------------------------------------------

def test_grid_keeps_alpha_with_an_opaque_border_and_rgb_grids_are_unchanged():
    sprites = np.stack([shape_rgba(8, i) for i in range(3)])
    mosaic = tile(sprites, nrow=2)
    assert mosaic.shape == (2 * 9 + 1, 2 * 9 + 1, 4)
    np.testing.assert_array_equal(mosaic[1:9, 1:9], sprites[0])
    assert (mosaic[0] == (BORDER, BORDER, BORDER, 255)).all()
    assert (mosaic[10:18, 10:18] == (BORDER, BORDER, BORDER, 255)).all()  # the empty cell is border, opaque
    assert grid_image(sprites, 2, scale=2).mode == "RGBA"
    rgb = tile(sprites[..., :3], nrow=2)
    assert rgb.shape == (19, 19, 3) and (rgb[0] == BORDER).all()


def test_gif_frames_show_transparency_on_a_checkerboard():
    sprites = np.stack([shape_rgba(8, i) for i in range(2)])
    frames = denoise_frames([(sprites, sprites)], scale=4)
    assert len(frames) == 1 and frames[0].mode == "RGB"
    picture = np.asarray(frames[0])
    corner = picture[4:8, 4:8]  # sprite 0's top-left pixel, transparent: the checkerboard's light square
    assert (corner == CHECKER[0]).all()
    assert (picture[4 * 4 + 4, 4 * 4 + 4] == sprites[0, 4, 4, :3]).all()  # an opaque pixel keeps its colour
    clear = np.kron(sprites[0, ..., 3] == 0, np.ones((4, 4), bool))  # sprite 0's transparent pixels, upscaled
    assert set(np.unique(picture[4:36, 4:36][clear])) == set(CHECKER)
    rgb = denoise_frames([(sprites[..., :3], sprites[..., :3])], scale=4)
    assert rgb[0].mode == "RGB"


def test_the_latent_tools_refuse_an_rgba_model_in_one_line():
    import spritediff
    from spritediff.checkpoint import SpriteModel
    from spritediff.sprites import COURSE_CLASSES
    from spritediff.errors import SpriteDiffError
    from spritediff.models import ContextUnet
    from spritediff.schedule import Schedule

    model = SpriteModel(ContextUnet(in_channels=4, n_feat=8), Schedule.course(), COURSE_CLASSES)
    image = np.zeros((16, 16, 4), np.uint8)
    for call in (lambda: spritediff.invert(model, image[None], steps=2), lambda: spritediff.edit(model, image, steps=2),
                 lambda: spritediff.interpolate(model, seeds=(0, 1), steps=2)):
        with pytest.raises(SpriteDiffError, match="take RGB models; this model makes 4-channel images"):
            call()
