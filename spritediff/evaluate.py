"""`spritediff eval`: sample quality (FD, KID) against model calls (NFE) and seconds, per sampler.

FD and KID compare sprite-feature-net features (spritediff.features) of generated and real sprites,
computed by torchmetrics (spritediff.metrics). The metric's own noise is measured beside them: FD
between two disjoint halves of the real set (split by sprite, so a mirror pair never straddles the
halves) and FD between two seeds of one sampler. The feature net's classifier head also gives the
samples' class mix against the real one (class_mix_gap) and, with a context, how often a sample is of the
class asked for.
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .defaults import EVAL
from .errors import SpriteDiffError
from .outputs import prepare_out, staged_output, write_json
from .sprites import CREDIT

DEFAULT_N = 1000
MAX_N = 100_000  # eval keeps every sample and its features in memory, so n is bounded


def add_eval_parser(sub) -> None:
    from .arguments import (add_device_argument, add_fast_path_arguments, add_model_argument, bounded_int,
                            nonnegative_float)
    from .defaults import DEFAULT_GUIDANCE, MAX_BATCH_SIZE
    from .checks import MAX_SEED
    from .defaults import TWO_SAMPLE_SPLITS as SPLITS

    p = sub.add_parser("eval",
                       description="Sample the model with each sampler spec, and compare the samples with the real "
                                   "sprites by FD and KID in the sprite feature net's features. Prints a table and "
                                   "writes DIR/eval.json and DIR/fd_vs_nfe.png. Also measures the metric's own noise: "
                                   "FD between two halves of the real set and between two seeds of one sampler.")
    add_model_argument(p)
    p.add_argument("--data", required=True, help="the real sprites: (N,H,H,3) uint8 .npy (the course's file or the "
                                                 "base set) or a folder of class subfolders")
    p.add_argument("--samplers",
                   help="comma-separated specs name:steps[:key=value...], e.g. "
                        "ddpm:500,ddim:10,ddim:20,ddim:50,ddim:100,ddpm:100:variance=posterior,ddim:20:eta=1; "
                        "required but for a distilled student, whose default is its own sampler ('student', e.g. "
                        "ddim:4)")
    p.add_argument("-n", "--n", type=bounded_int(2, MAX_N), default=DEFAULT_N,
                   help=f"samples per sampler, 2..{MAX_N} (default {DEFAULT_N}; FD's noise shrinks as n grows; all n "
                        f"are scored in memory)")
    p.add_argument("--seed", type=bounded_int(0, MAX_SEED - 1), default=0,
                   help="sample i uses noise stream (seed, i); the two-seed noise run uses seed+1 (default 0)")
    p.add_argument("--context", help="class name, blend like 'hero=1,food=0.6', 'random', 'mix' (classes drawn with "
                                     "the model's stored training class mix), 'data' (the label of a random real "
                                     "image, so the class mix of --labels) or 'none' (default "
                                     f"{EVAL.context or 'none'}: the model's own p(x), comparable across models, "
                                     "docs/design.md 'Defaults'); with one, the class accuracy of the samples is "
                                     "reported", default=EVAL.context)
    p.add_argument("--labels", help="(N,K) labels .npy of --data, for --context data")
    p.add_argument("--guidance", type=nonnegative_float, default=EVAL.guidance,
                   help=f"classifier-free guidance weight w, used with a context (default {DEFAULT_GUIDANCE}; a "
                        f"distilled student's own, in its weights)")
    p.add_argument("--noise-sampler", help="spec whose two seeds give the seed-to-seed FD (default: the first spec)")
    p.add_argument("--two-sample", action=argparse.BooleanOptionalAction, default=True,
                   help="also score each sampler with a classifier two-sample test (default on): the held-out accuracy "
                        "of a small CNN trained to tell its samples from real sprites, 0.5 = indistinguishable, on "
                        f"{SPLITS} splits (docs/metric.md); --no-two-sample skips it (about 20 s a sampler at n 1,000 "
                        "on 2 CPU cores)")
    p.add_argument("--features", help="feature net .safetensors (default: the shipped sprite feature net)")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH_SIZE),
                   help=f"samples per model call, 1..{MAX_BATCH_SIZE} (default: 128 on the CPU, 1024 on CUDA)")
    add_device_argument(p)
    add_fast_path_arguments(p)
    p.add_argument("--out", required=True, help="output folder for eval.json and fd_vs_nfe.png (written only if "
                                                "everything succeeds)")
    p.set_defaults(run=run_eval)


def run_eval(args) -> int:
    """`spritediff eval`: check the inputs, sample and score every spec, write eval.json and the FD plot."""
    from .checks import check_guidance

    from .launch import launched_rank

    if args.n < 2:
        raise SpriteDiffError(f"--n must be at least 2 for FD, got {args.n}")
    if args.guidance is not None:
        check_guidance(args.guidance, "--guidance")
    if launched_rank() == 0:
        prepare_out(args.out)

    from .sharded import checked_together, join, leave

    ranks = join()  # under torchrun every rank samples its share of each run, rank 0 scores and writes
    with checked_together(ranks):
        out = prepare_out(args.out) if ranks.is_main else None
        model, specs, noise_spec = _model_and_specs(args)
        real, labels = _reference_images(args, model)
        contexts = _eval_contexts(args, model, labels)
        features = _matching_features(args, model, real)
    evaluation = Evaluation(model, features, real, args, contexts, ranks)
    start = time.perf_counter()
    if not ranks.is_main:
        evaluation.draw_shares(specs, noise_spec)
        leave(ranks)
        return 0
    evaluation.run(specs, noise_spec, progress=sys.stderr.isatty())
    leave(ranks)
    record = _eval_record(args, model, features, real, evaluation, start)
    with staged_output(out) as stage:
        write_json(stage / "eval.json", record)
        plot_fd_vs_nfe(evaluation.rows, evaluation.noise, stage / "fd_vs_nfe.png",
                       title=f"{Path(model.path).name if model.path else 'default model'}, n={args.n}")
    print(format_table(evaluation.rows, evaluation.noise))
    print(f"-> {out / 'eval.json'}, {out / 'fd_vs_nfe.png'}")
    return 0


def _model_and_specs(args):
    """The model (after checking the device), the sampler specs to score and the spec of the noise-level rows."""
    from .checkpoint import load_model
    from .engine import resolve_device
    from .specs import parse_model_specs

    resolve_device(args.device)
    model = load_model(args.model)
    specs = parse_model_specs(args.samplers, model)
    noise_spec = parse_model_specs(args.noise_sampler, model, flag="--noise-sampler")[0] if args.noise_sampler \
        else specs[0]
    return model, specs, noise_spec


def _reference_images(args, model) -> tuple[np.ndarray, np.ndarray | None]:
    """The real images (N,H,W,C) uint8 without mirror copies, and their one-hot labels if given."""
    from .data import base_set, load_data

    data = load_data(args.data, args.labels, channels=model.net.in_channels)  # an RGBA folder flattened for an RGB model
    return base_set(data.images.numpy(), None if data.labels is None else data.labels.numpy())


def _eval_contexts(args, model, labels):
    """One context per sample: drawn from the real labels (--context data) or parsed from --context."""
    import torch

    from .context import parse_context
    from .engine import sample_generators

    context_streams = sample_generators(args.seed, args.n, stream=1)
    if (args.context or "").strip().lower() != "data":
        return parse_context(args.context, model.classes, args.n, context_streams, model.class_mix)
    if labels is None:
        raise SpriteDiffError("--context data draws each sample's context from the real labels: give --labels")
    if labels.shape[1] != model.net.n_cfeat:
        raise SpriteDiffError(f"--labels have {labels.shape[1]} classes but the model takes {model.net.n_cfeat} "
                              f"({', '.join(model.classes)})")
    return label_rows(torch.from_numpy(labels), context_streams)


def _matching_features(args, model, real: np.ndarray):
    """The feature net, after checking that the real images, the model's output and the net's input agree."""
    from .features import load_features

    shape = (model.net.height, model.net.height, model.net.in_channels)
    if real.shape[1:] != shape:
        raise SpriteDiffError(f"--data images are {real.shape[1:]} but the model makes {shape} (H,W,C)")
    if len(real) < 4:
        raise SpriteDiffError(f"--data has {len(real)} images; FD needs at least 4 (2 per half)")
    features = load_features(args.features)
    if features.net.height != shape[0] or features.net.in_channels != shape[2]:
        raise SpriteDiffError(f"the feature net takes {features.net.height}x{features.net.height} images with "
                              f"{features.net.in_channels} channels; the model makes {shape}")
    return features


def _eval_record(args, model, features, real: np.ndarray, evaluation, start: float) -> dict:
    """eval.json: the inputs and settings, the feature net, the metric's noise and one row per spec."""
    import torch

    from .features import DEFAULT_FEATURES

    return {
        "model": model.path or "default", "model_info": {k: model.info[k] for k in ("steps_done", "command")
                                                         if k in model.info},
        "data": Path(args.data).name, "reference_images": len(real), "n": args.n, "seed": args.seed,
        "context": args.context or "none",
        "guidance": None if args.context in (None, "none") else model_guidance(args.guidance, model),  # none: no use
        **({} if model.student is None else {"student": {"calls": model.student.calls,
                                                         "guidance": model.student.guidance,
                                                         "timesteps": list(model.student.timesteps),
                                                         "teacher": model.student.teacher}}),
        "device": args.device, "batch_size": args.batch_size,
        "net_precision_asked": args.precision, "fast": not args.eager,
        "feature_net": {"path": features.path if args.features else f"default ({DEFAULT_FEATURES.name})",
                        "feature_dim": features.net.feature_dim,
                        "held_out_accuracy": features.info.get("held_out", {}).get("accuracy")},
        "noise": evaluation.noise, "results": evaluation.rows,
        "classes": list(features.classes),  # the order of each row's class_mix and of real_class_mix
        "real_class_mix": [round(float(v), 4) for v in evaluation.quality.reference_mix],
        "metrics": "FD: torchmetrics FrechetInceptionDistance, KID: KernelInceptionDistance (polynomial kernel, "
                   "subsets of min(1000, n)), precision and recall: k-NN manifolds (k = 3, Kynkaanniemi et al. "
                   "2019), all on the sprite feature net's features; class_mix: the net's head's class shares, "
                   "class_mix_gap: their total variation distance from real_class_mix; c2st: a classifier two-sample "
                   "test (Lopez-Paz & Oquab 2017), the held-out accuracy of a small CNN telling the samples from real "
                   "sprites (0.5: indistinguishable), mean of c2st_splits, c2st_stderr the binomial standard error of "
                   "one split (docs/metric.md)",
        "seconds_total": round(time.perf_counter() - start, 2), "torch": torch.__version__,
        **({} if evaluation.ranks.size == 1 else {"world_size": evaluation.ranks.size}),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "credit": CREDIT,
    }


class Evaluation:
    """Samples each spec and scores it; rows: one dict per spec; noise: the metric's own noise levels."""

    def __init__(self, model, features, real: np.ndarray, args, contexts, ranks=None):
        from .distributed import World
        from .features import sprite_groups
        from .metrics import SpriteQuality

        self.model, self.features, self.real, self.args, self.contexts = model, features, real, args, contexts
        self.ranks = ranks or World()
        self.quality = SpriteQuality(features, real, seed=args.seed) if self.ranks.is_main else None
        self.real_groups = sprite_groups(real) if args.two_sample and self.ranks.is_main else None
        self.rows: list[dict] = []
        self.noise: dict = {}

    def sample(self, spec, seed: int, progress: bool) -> tuple[np.ndarray | None, object]:
        """(images (n,H,W,C) uint8, SampleResult) of one run; under torchrun each rank draws its share and rank 0
        gets them all (other ranks get (None, None))."""
        import numpy as np
        from tqdm.auto import tqdm

        from .engine import total_steps
        from .launch import local_device
        from .sampling import plan_sample
        from .sharded import sample_across

        plan = plan_sample(self.model, spec.name, spec.steps, self.args.n, self.contexts, self.args.guidance, seed,
                           local_device(self.args.device), self.args.batch_size, False, not self.args.eager,
                           self.args.precision, None, spec.options)
        shape = (self.args.n, self.model.net.height, self.model.net.height, self.model.net.in_channels)
        images = np.empty(shape, np.uint8) if self.ranks.is_main else None
        show = progress and self.ranks.is_main
        bar = tqdm(total=-(-total_steps(plan) // self.ranks.size), unit="step", leave=False) if show else None
        try:
            result, _ = sample_across(self.ranks, self.model, plan, images, bar)
        finally:
            if bar is not None:
                bar.close()
        return images, result

    def draw_shares(self, specs, noise_spec) -> None:
        """A torchrun rank other than 0: its share of every run that run() draws on rank 0, in the same order."""
        for spec, seed in sampling_order(specs, noise_spec, self.args.seed):
            self.sample(spec, seed, progress=False)

    def two_sample(self, images: np.ndarray) -> dict:
        """The row's two-sample test: its mean accuracy, per split, and one split's binomial standard error."""
        from .two_sample import two_sample_test

        if self.real_groups is None:
            return {}
        test = two_sample_test(images, self.real, self.real_groups, seed=self.args.seed)
        return {"c2st": round(test["accuracy"], 4), "c2st_splits": test["splits"],
                "c2st_stderr": round(test["stderr"], 4)}

    def run(self, specs, noise_spec, progress: bool = False) -> None:
        from tqdm.auto import tqdm

        from .metrics import class_accuracy, frechet_distance, seed_reach

        first_seed_images = {}
        bar = tqdm(total=len(specs) + 1, disable=not progress or None, unit="run", dynamic_ncols=True, leave=False)
        for spec in specs:
            bar.set_description(str(spec))
            images, result = self.sample(spec, self.args.seed, progress)
            scores = self.quality.score(images)
            accuracy = None if self.contexts is None else class_accuracy(
                self.features, images, self.contexts, self.model.classes)
            self.rows.append({"spec": str(spec), "sampler": spec.name, "steps": spec.steps, "options": spec.options,
                              "family": family(spec), "nfe": result.nfe, "seconds": round(result.seconds, 4),
                              "net_precision": result.settings["precision"],  # fp32 or bf16, as sample() ran the net
                              "fd": round(scores["fd"], 4), "kid": round(scores["kid"], 6),
                              "kid_std": round(scores["kid_std"], 6), "precision": round(scores["precision"], 4),
                              "recall": round(scores["recall"], 4),
                              "class_mix": [round(float(v), 4) for v in scores["class_mix"]],
                              "class_mix_gap": round(scores["class_mix_gap"], 4),
                              "class_accuracy": None if accuracy is None else round(accuracy, 4),
                              **self.two_sample(images)})
            first_seed_images.setdefault(str(spec), images)
            bar.update(1)
        bar.set_description(f"{noise_spec} seed {self.args.seed + 1}")
        first = first_seed_images.get(str(noise_spec))
        if first is None:  # the same runs, in the same order, as sampling_order lists for the other ranks
            first = self.sample(noise_spec, self.args.seed, progress)[0]
        second = self.sample(noise_spec, self.args.seed + 1, progress)[0]
        bar.update(1)
        bar.close()
        half_a, half_b = real_halves(self.real, self.args.seed)
        between = frechet_distance(self.features, first, second)
        first_fd = next((r["fd"] for r in self.rows if r["spec"] == str(noise_spec)), None)
        if first_fd is None:  # --noise-sampler outside --samplers: its FD alone, not the whole score
            first_fd = frechet_distance(self.features, self.real, first)
        self.noise = {
            "fd_real_halves": round(frechet_distance(self.features, self.real[half_a], self.real[half_b]), 4),
            "real_halves_sizes": [int(half_a.sum()), int(half_b.sum())],
            "fd_two_seeds": round(between, 4),
            "two_seeds": {"spec": str(noise_spec), "seeds": [self.args.seed, self.args.seed + 1], "n": self.args.n},
            # the most the first spec's FD to the real images can move with the seed (metrics.seed_reach); measured
            # moves between three seeds were 60-80 % of it (docs/metric.md)
            "fd_seed_reach": round(seed_reach(between, first_fd), 4),
            "note": "FD's bias falls as 1/n: real halves compare two sets of about N/2, two seeds two sets of n, "
                    "and each sampler row n samples against all N real images",
        }


def model_guidance(guidance: float | None, model) -> float:
    """The guidance a run used: the one given, else the model's own (a student's, or DEFAULT_GUIDANCE)."""
    from .defaults import DEFAULT_GUIDANCE

    if guidance is not None:
        return guidance
    return DEFAULT_GUIDANCE if model.student is None else model.student.guidance


def sampling_order(specs, noise_spec, seed: int) -> list[tuple[object, int]]:
    """(spec, seed) of every run Evaluation.run draws, in its order: each spec at seed, then the noise spec at seed
    (unless it is one of the specs) and at seed + 1."""
    again = [] if str(noise_spec) in {str(spec) for spec in specs} else [(noise_spec, seed)]
    return [(spec, seed) for spec in specs] + again + [(noise_spec, seed + 1)]


def label_rows(labels, generators):
    """(n, K) contexts: row i is the label of a real image drawn with generators[i] (the data's class mix)."""
    import torch

    picks = [int(torch.randint(len(labels), (1,), generator=g)) for g in generators]
    return labels[picks].float()


def family(spec) -> str:
    """A line of the plot: the sampler and its options, all steps together ("ddim", "ddim eta=1")."""
    return " ".join([spec.name, *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in spec.options.items())])


def real_halves(real: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint (N,) bool masks of about N/2 rows each; a sprite's mirror images and duplicates stay together."""
    import numpy as np

    from .features import sprite_groups

    groups = sprite_groups(real)
    order = np.random.default_rng([seed, 11]).permutation(groups.max() + 1)
    sizes = np.bincount(groups)[order]
    first = order[np.cumsum(sizes) <= len(real) / 2]
    half_a = np.isin(groups, first)
    if half_a.sum() < 2 or (~half_a).sum() < 2:  # one group holds (almost) everything: fall back to rows
        half_a = np.zeros(len(real), dtype=bool)
        half_a[np.random.default_rng([seed, 11]).permutation(len(real))[:len(real) // 2]] = True
    return half_a, ~half_a


def format_table(rows: list[dict], noise: dict) -> str:
    with_accuracy = any(r["class_accuracy"] is not None for r in rows)
    width = max([len("sampler")] + [len(r["spec"]) for r in rows])
    head = (f"{'sampler':<{width}}  {'NFE':>5}  {'seconds':>8}  {'FD':>9}  {'KID x1000':>14}  {'prec':>5}  "
            f"{'recall':>6}  {'mix gap':>7}")
    with_c2st = any("c2st" in r for r in rows)
    head += "  class acc" if with_accuracy else ""
    head += "   C2ST (2 splits)" if with_c2st else ""
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (f"{r['spec']:<{width}}  {r['nfe']:>5}  {r['seconds']:>8.3f}  {r['fd']:>9.3f}  "
                f"{1000 * r['kid']:>7.2f} ± {1000 * r['kid_std']:<5.2f}  {r['precision']:>5.3f}  {r['recall']:>6.3f}  "
                f"{r['class_mix_gap']:>7.3f}")
        if with_accuracy:
            line += f"  {'-' if r['class_accuracy'] is None else format(r['class_accuracy'], '.3f'):>9}"
        if with_c2st:
            line += f"   {r['c2st']:.3f} ({', '.join(f'{a:.3f}' for a in r['c2st_splits'])})"
        lines.append(line)
    a, b = noise["real_halves_sizes"]
    lines.append(f"noise: FD real vs real (halves, {a} vs {b}) = {noise['fd_real_halves']:.3f}; "
                 f"FD {noise['two_seeds']['spec']} seed vs seed (n={noise['two_seeds']['n']}) = "
                 f"{noise['fd_two_seeds']:.3f}" + (f", so its FD to the real sprites can move by up to "
                                                   f"{noise['fd_seed_reach']:.3f} with the seed"
                                                   if "fd_seed_reach" in noise else ""))
    return "\n".join(lines)


def readable_ticks(values: list[int], min_ratio: float = 1.25) -> list[int]:
    """The sorted values, dropping any within min_ratio of the last one kept (9 next to 10 on a log axis)."""
    kept: list[int] = []
    for v in values:
        if not kept or v >= kept[-1] * min_ratio:
            kept.append(v)
        elif v % 10 == 0 or v % 5 == 0:
            kept[-1] = v  # prefer the round number of a crowded pair
    return kept


def plot_fd_vs_nfe(rows: list[dict], noise: dict, path: Path, title: str = "") -> None:
    """FD against NFE (log x, log y), one line per sampler family, the real-vs-real noise as a band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter


    figure = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(figure)  # the Agg backend, without touching pyplot's global state
    ax = figure.add_subplot()
    floor = 1e-6
    values = [max(r["fd"], floor) for r in rows] + [max(noise["fd_real_halves"], floor),
                                                   max(noise["fd_two_seeds"], floor)]
    low, high = min(values) / 2, max(values) * 2
    ax.axhspan(low, max(noise["fd_real_halves"], floor), color="0.85", zorder=0,
               label=f"real vs real, halves ({noise['fd_real_halves']:.3g})")
    ax.axhline(max(noise["fd_two_seeds"], floor), color="0.4", linestyle="--", linewidth=1,
               label=f"{noise['two_seeds']['spec']}, seed vs seed ({noise['fd_two_seeds']:.3g})")
    for name in dict.fromkeys(r["family"] for r in rows):
        points = sorted((r["nfe"], max(r["fd"], floor)) for r in rows if r["family"] == name)
        ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    nfes = readable_ticks(sorted({r["nfe"] for r in rows}))
    ax.set_xticks(nfes, [str(v) for v in nfes])  # the NFEs measured, as plain numbers
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(low, high)
    ax.set_xlabel("NFE (model calls per sample)")
    ax.set_ylabel("FD (sprite features; lower is better)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    figure.text(0.99, 0.01, CREDIT, ha="right", va="bottom", fontsize=6, color="0.4")
    figure.tight_layout()
    figure.savefig(path)
