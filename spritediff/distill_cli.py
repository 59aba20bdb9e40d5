"""`spritediff distill`: progressive distillation of a model into a few-call student (spritediff.distill).

No torch at the top: the parser and --help load only what they need.

Every input is checked before any work: a bad one is one line on stderr, exit code 2, and no file is written.
Like `train`, the run keeps OUT.train.pt (resumable state, written atomically) and OUT.log.jsonl beside OUT;
Ctrl-C keeps the last checkpoint and `--resume` continues to exactly the weights of an uninterrupted run.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import SpriteDiffError


def add_distill_parser(sub) -> None:
    from .arguments import add_device_argument, nonnegative_float, positive_float, positive_int, seed_int
    from .defaults import DEFAULT_GUIDANCE
    from .distill_config import DMD_WEIGHTS, PRECISIONS, STATES, STUDENT_PREDICTIONS, DistillConfig

    d = DistillConfig()
    p = sub.add_parser("distill",
                       description="Progressive distillation (Salimans and Ho 2022) of a teacher's guided "
                                   "deterministic DDIM: each round trains a student to take one step where the "
                                   "teacher (the previous round's student) takes two (--jump), from --start-steps "
                                   "down to --calls. The student predicts v (or x0), samples every class and no "
                                   "context, and records its grid, sampler and guidance: `spritediff sample "
                                   "--model OUT` uses them. Writes OUT, OUT's .train.pt (resumable state) and "
                                   ".log.jsonl beside it, and each finished round's student as "
                                   "OUT-callsN.safetensors.")
    p.add_argument("--teacher", required=True, metavar="MODEL",
                   help="the model to distil: a .safetensors or course .pth file, or 'default' (the shipped model)")
    p.add_argument("--data", required=True,
                   help="the teacher's training data, as for train: an (N,H,H,C) uint8 .npy or a folder of images; "
                        "x_t is the data noised at the student's times (cheaper than sampling the teacher, and it "
                        "is the distribution the teacher learned)")
    p.add_argument("--labels", help="(N,K) one-hot .npy of the data's classes; needed for a teacher with classes")
    p.add_argument("--out", required=True, help="the student's model file (.safetensors)")
    p.add_argument("--calls", type=positive_int, default=d.calls,
                   help=f"model calls of the final student per sample (default {d.calls})")
    p.add_argument("--start-steps", type=positive_int, default=d.start_steps,
                   help=f"the teacher's DDIM steps that the first round divides by --jump: --calls times a power of "
                        f"--jump (default {d.start_steps}: with --calls 4, four rounds 64 -> 32 -> 16 -> 8 -> 4)")
    p.add_argument("--jump", type=positive_int, default=d.jump,
                   help=f"teacher steps that one student step learns to take, every round (default {d.jump}, "
                        f"progressive halving); --start-steps / --calls gives one round, e.g. --start-steps 20 "
                        f"--calls 4 --jump 5 distils the teacher's DDIM-20 straight into 4 calls")
    p.add_argument("--steps-per-round", type=positive_int, default=d.steps_per_round,
                   help=f"optimizer steps in each round (default {d.steps_per_round})")
    p.add_argument("--states", choices=STATES, default=d.states,
                   help="where the student learns: data (default): x_t is the training data noised at the "
                        "student's times, any number of rounds; teacher: x_t is a state of the guided teacher's own "
                        "DDIM path from pure noise, where the student's later calls will be, and the target is the "
                        "path's next state (one round only: --start-steps = --calls x --jump; the paths are drawn "
                        "once at the start of the run, and again on --resume); measured no better than data, and cheaper for "
                        "long jumps (docs/results.md); student: x_t is where the student's own calls from pure noise "
                        "lead, and the target the teacher's steps from there, so it learns to correct its own drift "
                        "(one round only, and --init must give the student it starts from); measured: a little "
                        "more precision for less spread")
    p.add_argument("--paths", type=positive_int, default=d.paths,
                   help=f"with --states teacher: teacher paths drawn at the start (default {d.paths}; each costs "
                        f"--start-steps guided teacher calls and (--calls + 1) x C x H x W floats of memory)")
    p.add_argument("--student-width", type=positive_int, metavar="N_FEAT",
                   help="the student's n_feat, a multiple of the teacher's (default: the teacher's): a wider "
                        "student starts as the teacher (or --init) widened to compute the same function "
                        "(Net2Net), with more room for the few-step jumps; each step costs about "
                        "(width / teacher's)^2 as much")
    p.add_argument("--init", metavar="STUDENT",
                   help="start round 1's student from STUDENT, a student of the same teacher on round 1's grid "
                        "(the same --calls, --start-steps, --jump, --guidance and --prediction; a narrower one is "
                        "widened to --student-width, the same function), instead of "
                        "from the teacher: to go on from a finished run with other settings, e.g. --adversarial "
                        "(docs/results.md); resume with the same --init")
    p.add_argument("--adversarial", type=nonnegative_float, default=d.adversarial, metavar="RATIO",
                   help="add a critic that tells the teacher's x0 targets from the student's, and train the "
                        "student to fool it as well as to match the targets: the critic's gradient at the "
                        "student's last layer is RATIO times the squared error's (default 0: off; a squared error "
                        "averages what a jump cannot resolve, a critic judges each sample; 0.3 raised a 4-call "
                        "student's recall and two-sample score, 0.6 from a trained student (--init) to its "
                        "teacher's DDIM-20 level, docs/results.md)")
    p.add_argument("--adversarial-sample", type=nonnegative_float, default=d.adversarial_sample, metavar="RATIO",
                   help="add a second critic that tells the student's whole --calls-call samples (drawn each step "
                        "from fresh noise, with the classes of the step's sprites) from those real sprites, and "
                        "train the student to fool it through all its calls, its gradient RATIO times the squared "
                        "error's: the squared error can at best bring the student to its teacher's sampler, real "
                        "sprites can take it further (default 0: off; each step costs "
                        "about a --calls-call sample's forward and backward passes more; measured at 0.3 on the "
                        "4-call student: FD far lower, precision, recall and two-sample score worse, the critic "
                        "fooled by grainy texture within 25 steps, docs/results.md)")
    p.add_argument("--dmd", type=nonnegative_float, default=d.dmd, metavar="RATIO",
                   help="add distribution matching (DMD, Yin et al. 2024): a copy of the teacher learns the "
                        "student's whole --calls-call samples as they are drawn, and the student follows, through "
                        "all its calls, the difference between its denoising and the teacher's, towards the "
                        "teacher's distribution rather than its sampler's landings; its gradient RATIO times the "
                        "squared error's (default 0: off; one round; each step costs a --calls-call sample's "
                        "forward and backward passes and --dmd-fake-steps training steps of the teacher's net more; "
                        "measured on the 4-call student: at 0.25, and at 1.0 with five fake steps, points half-way "
                        "through a run came near DDIM-20 (one within 0.03 on every judge), no run's end did, at 2.0 "
                        "neither: the gain half-way is a transient; at 1.0 with one fake step the sprites collapsed "
                        "to a few colours, docs/results.md)")
    p.add_argument("--dmd-fake-steps", type=positive_int, default=d.dmd_fake_steps, metavar="N",
                   help=f"with --dmd: the fake score's training steps per student step, each on the same samples "
                        f"with fresh noise; it must keep up with the student it learns (default {d.dmd_fake_steps}; "
                        f"DMD2 runs 5, which kept --dmd 1.0 from the all-class collapse that 1 let happen, though one "
                        f"seed of three still lost one class's variety)")
    p.add_argument("--dmd-weight", choices=DMD_WEIGHTS, default=d.dmd_weight,
                   help=f"with --dmd: how RATIO sets the term's weight: balanced sets it at every step, so that the "
                        f"term keeps RATIO times the squared error's gradient even as the student's distribution "
                        f"meets the teacher's; frozen sets it so at the first step the term joins and then holds it, "
                        f"so that the term fades as they meet, as DMD's fixed weight does (default {d.dmd_weight}; "
                        f"measured on the 4-call student: frozen was ahead of balanced half-way and drifted back to the start by the "
                        f"end as balanced does, docs/results.md)")
    p.add_argument("--dmd-t-max", type=positive_float, default=d.dmd_t_max, metavar="SHARE",
                   help=f"with --dmd: the matching's noise levels are drawn uniformly from 0.02 of T up to SHARE of "
                        f"T (0.05 to 1); lower puts the term on fine detail, which a denoiser sees only at low noise "
                        f"(default {d.dmd_t_max}, as DMD; measured on the 4-call student: 0.3 collapsed every class "
                        f"onto one sprite half-way, docs/results.md)")
    p.add_argument("--dmd-gan", type=nonnegative_float, default=d.dmd_gan, metavar="RATIO",
                   help="with --dmd: add DMD2's GAN term, a critic on the fake score's own features (trained beside "
                        "it) that tells the step's real sprites from the student's samples, both noised, and train "
                        "the student to fool it, its gradient RATIO times the squared error's: a comparison with "
                        "the data by a critic that keeps up, where --adversarial-sample's did not (default 0: off; "
                        "each step costs --dmd-fake-steps forward and backward passes of the teacher's net on the "
                        "real sprites more; measured on the 4-call student with --dmd 1.0: at 0.5, 1.0 and 2.0 "
                        "every end beat DDIM-20 on FD and the two-sample test; none reached its precision on "
                        "eval's, short by 0.01-0.07 on some seeds, docs/results.md)")
    p.add_argument("--dmd-guidance", type=nonnegative_float, default=None, metavar="W",
                   help="with --dmd: the classifier-free guidance of the matching's real score, the teacher's "
                        "denoising that the student's samples are moved towards (default: --guidance's); a higher "
                        "W aims the matching at the teacher's sharper, guided distribution while the squared error "
                        "still holds the student to its jumps at --guidance, as DMD guides its real score "
                        "(measured on the 1-call student's GAN round: W 3 with --guidance 0.5 added 0.019 to its "
                        "precision, level with DDIM-4's; with --guidance 1.0, W 2 and 3 moved it by less than the "
                        "scoring seeds tell apart, docs/results.md)")
    p.add_argument("--squared-error", type=nonnegative_float, default=d.squared_error, metavar="WEIGHT",
                   help=f"the weight of the squared error to the teacher's jumps in the student's loss; 0 drops it and "
                        f"the student follows --dmd, --dmd-gan and the critics alone, as DMD2's does (their RATIOs "
                        f"still measured against its gradient, and its value still logged; default "
                        f"{d.squared_error:g}; measured on the 4-call student's GAN round: 0 was worse on every "
                        f"measure at every seed, docs/results.md)")
    p.add_argument("--adversarial-start", type=nonnegative_float, default=d.adversarial_start, metavar="SHARE",
                   help=f"with --adversarial, --adversarial-sample or --dmd: the share of each round (0 to below "
                        f"1) the student learns from the squared error alone (with --squared-error 0, not at all) "
                        f"while the critics (and the fake score) learn; an untrained critic only adds noise "
                        f"(default {d.adversarial_start})")
    p.add_argument("--batch", type=positive_int, default=d.batch, help=f"batch size (default {d.batch})")
    p.add_argument("--lr", type=positive_float, default=d.lr,
                   help=f"Adam learning rate, decayed linearly to 0 within each round (default {d.lr})")
    p.add_argument("--guidance", type=nonnegative_float,
                   help=f"the teacher's classifier-free guidance weight that the student learns to reproduce in one "
                        f"branch; fixed per student (default {DEFAULT_GUIDANCE}, sample's default; measured on the "
                        f"4-call student: at 1.0, where the teacher's DDIM-20 has 0.03 more precision, the GAN "
                        f"round's end gained 0.00 of it on 512 sprites and 0.01 on 2,048; the shipped student is "
                        f"the 1.0 one, docs/results.md)")
    p.add_argument("--prediction", choices=STUDENT_PREDICTIONS, default=d.prediction,
                   help=f"what the student net outputs (default {d.prediction}; eps cannot give x0 at the noisiest "
                        f"step)")
    p.add_argument("--context-drop", type=nonnegative_float, default=d.context_drop,
                   help=f"share of rows distilled with no context, the teacher's unconditional path (default "
                        f"{d.context_drop})")
    p.add_argument("--ema", type=nonnegative_float, default=d.ema,
                   help=f"EMA decay (warmed up) of each round's student (default {d.ema})")
    p.add_argument("--seed", type=seed_int, default=d.seed, help=f"seed of data order and noise (default {d.seed})")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="fp32 (default, bit-reproducible) or bf16 autocast of the teacher's and student's forward "
                        "passes")
    add_device_argument(p)
    p.add_argument("--ckpt-every", type=positive_int, default=500,
                   help="checkpoint every N steps, and at each round's end (default 500)")
    p.add_argument("--fp32", action="store_true", help="store the student in float32 (default float16)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue from OUT's .train.pt checkpoint, with the same settings and teacher")
    start.add_argument("--overwrite", action="store_true",
                       help="replace an existing run at OUT (its model, .train.pt and .log.jsonl)")
    p.set_defaults(run=run_distill, kept=what_was_kept)


def run_distill(args) -> int:
    import torch

    from .checkpoint import load_model
    from .data import load_data
    from .defaults import DEFAULT_GUIDANCE
    from .distill import DistillConfig, check_data_fits, check_teacher, run_distillation, teacher_fingerprint
    from .engine import resolve_device
    from .outputs import model_out_path
    from .train import check_run_files

    out = model_out_path(args.out)
    check_run_files(out, args.resume, args.overwrite)
    device = resolve_device(args.device)
    teacher = load_model(args.teacher)
    check_teacher(teacher, args.teacher)
    for flag, weight in (("--guidance", args.guidance), ("--dmd-guidance", args.dmd_guidance)):
        if teacher.net.n_cfeat == 0 and weight not in (None, 0):
            raise SpriteDiffError(f"{flag} {weight:g}: the teacher has no classes, so nothing to guide")
    guidance = (DEFAULT_GUIDANCE if args.guidance is None else args.guidance) if teacher.net.n_cfeat else 0.0
    config = DistillConfig(calls=args.calls, start_steps=args.start_steps, jump=args.jump,
                           steps_per_round=args.steps_per_round,
                           batch=args.batch, lr=args.lr, guidance=guidance, prediction=args.prediction,
                           context_drop=args.context_drop, ema=args.ema, seed=args.seed, precision=args.precision,
                           states=args.states, paths=args.paths, student_width=args.student_width or 0,
                           adversarial=args.adversarial, adversarial_sample=args.adversarial_sample,
                           dmd=args.dmd, dmd_fake_steps=args.dmd_fake_steps,
                           dmd_weight=args.dmd_weight, dmd_t_max=args.dmd_t_max, dmd_gan=args.dmd_gan,
                           dmd_guidance=args.dmd_guidance,
                           squared_error=args.squared_error, adversarial_start=args.adversarial_start)
    init = None if args.init is None else load_model(args.init)
    config.init_sha256 = "" if init is None else teacher_fingerprint(init)
    config.check(teacher.schedule.T)
    config.width_factor(teacher.net.n_feat)
    data = load_data(args.data, args.labels, teacher.net.in_channels)
    check_data_fits(teacher, data)
    config.teacher_sha256 = teacher_fingerprint(teacher)
    model = run_distillation(config, teacher, data, out, device, args.ckpt_every, args.resume, args.overwrite,
                             progress=sys.stderr.isatty(), data_name=Path(args.data).name,
                             dtype=torch.float32 if args.fp32 else torch.float16, init=init)
    print(f"wrote {out}: {model.student.describe()} after {model.info['steps_done']} steps "
          f"({model.info['wall_seconds']} s)")
    return 0


def what_was_kept(args) -> str:
    """What a stopped distillation leaves: its last checkpoint (and OUT from it), or nothing."""
    from .distill import read_state
    from .train import checkpoint_kept

    return checkpoint_kept(args.out, read_state)
