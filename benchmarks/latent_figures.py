"""The pictures of docs/latent.md: reconstructions (DDIM and exact inversion at S = 10 and 100), interpolation
strips, a class edit (SDEdit) and inpainting, all with the default model (or --model).

    python benchmarks/latent_figures.py --out docs/latent

The input sprites are the model's own DDIM-50 samples (seeded): the real sprites may not go into the
repository, so neither may their reconstructions. --data SPRITES.npy uses real sprites instead, for a look
on your own machine (do not commit those pictures). Sprites by ElvGames, FrootsnVeggies and kyrise.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

import spritediff
from spritediff import render
from spritediff.latent import lerp, slerp
from spritediff.engine import initial_noise, sample_generators

SCALE = 6
LABEL_WIDTH = 150


def inputs(model, n: int, seed: int, data: Path | None, context: str | None = None) -> np.ndarray:
    """(n,16,16,3) uint8: DDIM-50 samples, one class after another (or `context`), or the first sprites of data."""
    if data is not None:
        return np.load(data)[:n]
    ctx = torch.eye(len(model.classes))[torch.arange(n) % len(model.classes)] if context is None else context
    return spritediff.sample(model, "ddim", 50, n=n, context=ctx, seed=seed, frames=False).images


def labelled(rows: list[tuple[str, np.ndarray]]) -> Image.Image:
    """One row of sprites per (label, (k,H,W,3) uint8), the label on the left; sprites upscaled SCALE times."""
    pictures = [render.grid_image(images, len(images), SCALE) for _, images in rows]
    width = LABEL_WIDTH + max(p.width for p in pictures)
    canvas = Image.new("RGB", (width, sum(p.height for p in pictures)), (255, 255, 255))
    draw, y = ImageDraw.Draw(canvas), 0
    for (label, _), picture in zip(rows, pictures):
        canvas.paste(picture, (LABEL_WIDTH, y))
        draw.text((6, y + picture.height // 2 - 6), label, fill=(0, 0, 0))
        y += picture.height
    return canvas


def save(picture: Image.Image, path: Path, description: str) -> None:
    info = PngInfo()
    info.add_text("Description", description)
    info.add_text("Credit", spritediff.CREDIT)
    picture.save(path, pnginfo=info)
    print(f"{path}: {description}")


def reconstructions(model, sprites: np.ndarray, out: Path) -> None:
    rows = [("input", sprites)]
    for steps in (10, 100):
        for method in ("ddim", "exact"):
            result = spritediff.invert(model, sprites, steps, method, context="none")
            rows.append((f"{method} S={steps} {result.errors.mean():.0e}", result.images))
    save(labelled(rows), out / "reconstructions.png", "inputs, then decoded latents: ddim and exact at S=10, 100")


def interpolations(model, sprites: np.ndarray, out: Path) -> None:
    seeds = spritediff.interpolate(model, seeds=(3, 7), frames=10, context="hero", steps=20)
    blend = spritediff.interpolate(model, seeds=(3, 7), frames=10, context=("hero", "side-facing"), steps=20)
    images = spritediff.interpolate(model, images=sprites[:2], frames=10, steps=50, method="exact")
    rows = [("seeds 3-7, hero", seeds.images), ("hero -> side-facing", blend.images),
            ("two sprites, exact", images.images)]
    save(labelled(rows), out / "interpolation.png", "slerp strips: seeds 3 and 7 (hero, then hero to side-facing), "
                                                    "two sprites inverted exactly (S=50)")
    blend.save_gif(out / "interpolation.gif")
    norms = ", ".join(f"{v:.1f}" for v in seeds.norms)
    print(f"  latent norms along the seeds strip: {norms} (sqrt(768) = {768 ** 0.5:.1f})")
    lerp_against_slerp()


def lerp_against_slerp(seeds=(3, 7)) -> None:
    """Print the norms of lerp's and slerp's midpoints between two seeds' x_T (sqrt(768) = 27.7 is typical)."""
    ends = torch.cat([initial_noise(sample_generators(s, 1), (3, 16, 16)) for s in seeds])
    for name, middle in (("lerp", lerp(ends[:1], ends[1:], 0.5)), ("slerp", slerp(ends[:1], ends[1:], 0.5))):
        print(f"  {name} midpoint of seeds {seeds}: norm {float(middle.norm()):.1f}")


def class_edit(model, hero: np.ndarray, out: Path) -> None:
    rows = []
    for strength in (0.4, 0.6, 0.8):
        result = spritediff.edit(model, hero, strength=strength, context="side-facing", n=6, seed=0, steps=50)
        rows.append((f"strength {strength}", np.concatenate([hero[None], result.images])))
    save(labelled(rows), out / "class_edit.png", "SDEdit: a hero (left) made side-facing, 6 seeds per strength")


def inpainting(model, sprites: np.ndarray, out: Path) -> None:
    mask = np.zeros((16, 16), np.float32)
    mask[3:11, 4:12] = 1
    rows = []
    for i, sprite in enumerate(sprites[:2]):
        holed = sprite.copy()
        holed[mask > 0] = 128
        for resample in (1, 5):
            result = spritediff.edit(model, sprite, mask=mask, n=6, seed=i, steps=50, resample=resample)
            rows.append((f"sprite {i}, R={resample}", np.concatenate([sprite[None], holed[None], result.images])))
    save(labelled(rows), out / "inpainting.png", "inpainting: input, the hole (grey), 6 fills (DDIM-50); "
                                                 "R=1 plain replacement, R=5 RePaint resampling")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--data", type=Path, help="real sprites .npy instead of the model's samples (do not commit)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the input samples (default 0)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = spritediff.load(args.model)
    sprites = inputs(model, 8, args.seed, args.data)
    reconstructions(model, sprites, args.out)
    interpolations(model, sprites, args.out)
    hero = inputs(model, 1, args.seed + 1, args.data, context="hero")[0]
    class_edit(model, hero, args.out)
    inpainting(model, sprites, args.out)


if __name__ == "__main__":
    main()
