"""`spritediff invert | interpolate | edit`: DDIM's latent space on the command line (spritediff.latent.api).

Every input is checked before any work and before --out is touched: a bad input is one line on stderr, exit
code 2, nothing written. Outputs are staged and moved into --out only when all of them are written.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .defaults import DEFAULT_GUIDANCE
from .errors import SpriteDiffError
from .sprites import credit_record


def check_out(path: str) -> None:
    """Fail early, creating nothing, where --out can not become a writable folder."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise SpriteDiffError(f"--out {out} exists and is not a folder")
    existing = next(p for p in [out, *out.absolute().parents] if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SpriteDiffError(f"cannot write to --out {out}: {existing} is not writable")


def write_record(stage: Path, record: dict) -> None:
    (stage / "run.json").write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")


def model_record(model) -> dict:
    return {"model": model.path or "default", **credit_record(model.info)}


def add_invert_parser(sub) -> None:
    from .arguments import add_device_argument, add_model_argument, positive_int

    p = sub.add_parser("invert",
                       description="Invert sprites to DDIM latents and reconstruct them. Writes DIR/latents.npy "
                                   "(N,3,H,W float32 x_T), DIR/latents_t1.npy (method exact: the second state, at "
                                   "t_1), DIR/reconstructions.npy (N,H,W,3 uint8), DIR/grid.png (input beside "
                                   "reconstruction) and DIR/run.json (settings, error per image).")
    p.add_argument("images", nargs="+", help="PNG files, folders of PNGs, or (N,H,W,3) uint8 .npy files")
    add_model_argument(p)
    p.add_argument("--steps", type=int, default=50, help="steps S for encoding and again for decoding (default 50)")
    p.add_argument("--method", default="ddim", help="ddim (the paper's; error falls with S) or exact (BDIA: float "
                                                     "precision at any S; latent is the pair x_T, x_t1) (default ddim)")
    p.add_argument("--context", default="auto", help="auto (the class from --labels, else none), a class, a mix "
                                                      "like 'hero=1,food=0.6', or none (default auto)")
    p.add_argument("--labels", help="(N,K) .npy labels of the images, for --context auto")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight (default 0: the "
                                                               "model's own ODE, which reconstructs best)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per model call (default 256)")
    p.add_argument("--nrow", type=positive_int, help="images per grid row (default 8: 4 pairs)")
    add_device_argument(p)
    p.add_argument("--out", required=True, help="output folder (created; existing files of the same names replaced)")
    p.set_defaults(run=run_invert)


def run_invert(args) -> int:
    """Invert; under torchrun each rank inverts whole batches of the images and rank 0 alone writes --out."""
    import numpy as np

    from .checkpoint import load_model
    from .latent.api import as_images, resolve_contexts
    from .latent.images import read_labels
    from .outputs import prepare_out, staged_output
    from .sharded import checked_together, join, leave

    ranks = join()
    with checked_together(ranks):
        check_out(args.out)
        model = load_model(args.model)
        pixels, names = as_images(args.images, model)
        labels = read_labels(args.labels, len(pixels)) if args.labels else None
        contexts = resolve_contexts(model, args.context, len(pixels), labels)
    result, seconds = _invert_ranks(ranks, model, pixels, contexts, args)
    if not ranks.is_main:
        leave(ranks)
        return 0
    result.settings.update(context=args.context, names=names)
    record = {**result.settings, "nfe": result.nfe, "seconds": round(result.seconds, 3),
              "mse_mean": float(result.errors.mean()), "mse_max": float(result.errors.max()),
              "errors": {name: float(e) for name, e in zip(names, result.errors)}, **model_record(model),
              "mse": "per pixel on the [0, 1] scale, input against the float reconstruction",
              **({} if ranks.size == 1 else {"world_size": ranks.size,
                                             "seconds_per_rank": [round(s, 3) for s in seconds]})}
    out = prepare_out(args.out)
    with staged_output(out) as stage:
        np.save(stage / "latents.npy", result.latents.numpy().astype(np.float32))
        if result.latents_t1 is not None:
            np.save(stage / "latents_t1.npy", result.latents_t1.numpy().astype(np.float32))
        np.save(stage / "reconstructions.npy", result.images)
        result.grid(args.nrow).save(stage / "grid.png")
        write_record(stage, record)
    leave(ranks)
    print(f"inverted {len(pixels)} images, {args.method} {args.steps} steps, mean MSE {result.errors.mean():.3g} "
          f"(max {result.errors.max():.3g}), {result.seconds:.2f} s{'' if ranks.size == 1 else f', {ranks.size} processes'}"
          f" -> {out}")
    return 0


def _invert_ranks(ranks, model, pixels, contexts, args):
    """(result, seconds per rank): this rank inverts its share (whole batches of --batch-size); rank 0 gets the
    InversionResult of every image (latents, reconstructions, errors gathered), the others None."""
    import numpy as np
    import torch

    from .latent.api import InversionResult, invert
    from .launch import local_device
    from .sharded import gather_rows, gather_values, shares

    all_shares = shares(len(pixels), args.batch_size, ranks.size)
    lo, hi = all_shares[ranks.rank]
    part = None
    if hi > lo:
        part = invert(model, pixels[lo:hi], args.steps, args.method, None if contexts is None else contexts[lo:hi],
                      None, args.guidance, local_device(args.device), batch_size=args.batch_size)
    seconds = [values[0] for values in gather_values(ranks, [part.seconds if part else 0.0])]
    if ranks.size == 1:
        return part, seconds
    pieces = {"images": part.images if part else None, "latents": part.latents.numpy() if part else None,
              "errors": part.errors if part else None}
    if args.method != "ddim":
        pieces["latents_t1"] = part.latents_t1.numpy() if part else None
    gathered = {}
    for name, mine in pieces.items():  # every rank gathers the same names in the same order
        full = None
        if ranks.is_main:
            full = np.empty((len(pixels), *mine.shape[1:]), mine.dtype)
            full[lo:hi] = mine
        gather_rows(ranks, mine if mine is not None else np.zeros((0,)), all_shares, full)
        gathered[name] = full
    if not ranks.is_main:
        return None, seconds
    t1 = gathered.get("latents_t1")
    return InversionResult(gathered["images"], [], [], part.nfe, max(seconds), dict(part.settings, n=len(pixels)),
                           pixels, torch.from_numpy(gathered["latents"]), None if t1 is None else torch.from_numpy(t1),
                           gathered["errors"]), seconds


def add_interpolate_parser(sub) -> None:
    from .arguments import add_device_argument, add_model_argument, positive_int

    p = sub.add_parser("interpolate",
                       description="Spherical interpolation between two DDIM latents, each frame decoded with DDIM. "
                                   "Writes DIR/strip.png, DIR/interpolation.gif (forth and back), DIR/frames.npy "
                                   "(K,H,W,3 uint8), DIR/latents.npy and DIR/run.json (with each frame's latent norm).")
    ends = p.add_mutually_exclusive_group(required=True)
    ends.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                      help="two seeds A B: the x_T of `spritediff sample --seed A` (and B), sample 0")
    ends.add_argument("--images", nargs="+", metavar="IMAGE",
                      help="two sprites (PNG files or a 2-image .npy), inverted first")
    add_model_argument(p)
    p.add_argument("--frames", type=int, default=8, help="frames K, ends included (default 8)")
    p.add_argument("--context", nargs="+", metavar="C", help="one class for the whole path, or C1 C2 blended along it")
    p.add_argument("--steps", type=int, help="DDIM steps to decode (and invert) (default 20; a distilled student "
                                              "decodes on its own grid)")
    p.add_argument("--method", default="ddim", help="inversion of --images: ddim or exact (default ddim)")
    p.add_argument("--guidance", type=float, help=f"guidance weight (default {DEFAULT_GUIDANCE} with --seeds and "
                                                  "a context, 0 with --images)")
    add_device_argument(p)
    p.add_argument("--out", required=True, help="output folder (created; existing files of the same names replaced)")
    p.set_defaults(run=run_interpolate)


def run_interpolate(args) -> int:
    import numpy as np

    from .checkpoint import load_model
    from .latent.api import interpolate
    from .outputs import prepare_out, staged_output

    check_out(args.out)
    start = time.perf_counter()
    model = load_model(args.model)
    loaded = time.perf_counter()
    context = None if args.context is None else args.context[0] if len(args.context) == 1 else args.context
    result = interpolate(model, args.seeds, args.images, args.frames, context, args.steps, args.method,
                         args.guidance, args.device)
    out = prepare_out(args.out)
    with staged_output(out) as stage:
        written = time.perf_counter()
        result.grid().save(stage / "strip.png")
        result.save_gif(stage / "interpolation.gif")
        np.save(stage / "frames.npy", result.images)
        np.save(stage / "latents.npy", result.latents.numpy().astype(np.float32))
        parts = {"load_model": loaded - start, "invert": result.invert_seconds,
                 "decode": result.seconds - result.invert_seconds, "write": time.perf_counter() - written}
        record = {**result.settings, "alphas": [round(float(a), 6) for a in result.alphas],
                  "latent_norms": [round(float(v), 4) for v in result.norms], "nfe": result.nfe,
                  "seconds": round(time.perf_counter() - start, 3),
                  "seconds_parts": {name: round(value, 3) for name, value in parts.items()}, **model_record(model)}
        write_record(stage, record)
    print(f"{args.frames} frames, slerp, DDIM {record['steps']} steps, {record['seconds']:.2f} s -> {out}")
    return 0


def add_edit_parser(sub) -> None:
    from .arguments import add_device_argument, add_model_argument, positive_int

    p = sub.add_parser("edit",
                       description="Noise a sprite to t0 = strength * T and denoise it with DDIM and the given "
                                   "context (SDEdit); with --mask, keep the pixels outside the mask and let the "
                                   "model fill the rest. Writes DIR/grid.png (input | results), DIR/edit.gif (the "
                                   "run's denoising), DIR/edits.npy (n,H,W,3 uint8) and DIR/run.json.")
    p.add_argument("image", help="one RGB sprite (PNG) of the model's size")
    add_model_argument(p)
    p.add_argument("--strength", type=float, help="0..1: how far to noise (default 0.6; 1 with --mask); 0 returns "
                                                  "the input, 1 samples afresh")
    p.add_argument("--context", help="class or mix to draw, e.g. side-facing (default none)")
    p.add_argument("--mask", help="PNG of the image's size: white = fill in, black = keep")
    p.add_argument("--resample", type=int, help="inpainting: RePaint resamples per step, R model calls each "
                                                "(default 5; 1 = plain replacement of the known pixels)")
    p.add_argument("-n", "--n", type=int, default=4, help="results (default 4)")
    p.add_argument("--seed", type=int, default=0, help="result i uses noise stream (seed, i) (default 0)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps over the whole range; a run from t0 takes "
                                                         "steps * t0 / T (default 50)")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                   help=f"classifier-free guidance weight with a context (default {DEFAULT_GUIDANCE})")
    add_device_argument(p)
    p.add_argument("--out", required=True, help="output folder (created; existing files of the same names replaced)")
    p.set_defaults(run=run_edit)


def run_edit(args) -> int:
    import numpy as np

    from .checkpoint import load_model
    from .latent.api import edit
    from .outputs import prepare_out, staged_output

    check_out(args.out)
    model = load_model(args.model)
    result = edit(model, args.image, args.strength, args.context, args.mask, args.n, args.seed, args.steps,
                  args.guidance, args.device, args.resample)
    record = {**result.settings, "image": args.image, "mask_file": args.mask, "nfe": result.nfe,
              "seconds": round(result.seconds, 3), **model_record(model)}
    out = prepare_out(args.out)
    with staged_output(out) as stage:
        result.grid().save(stage / "grid.png")
        if result.frames:
            result.save_gif(stage / "edit.gif")
        np.save(stage / "edits.npy", result.images)
        write_record(stage, record)
    print(f"{args.n} edits, strength {result.settings['strength']} (t0 = {result.t0}), {result.nfe} model calls, "
          f"{result.seconds:.2f} s -> {out}", file=sys.stdout)
    return 0
