"""``aca-search``: run an ACA architecture search (see :func:`aca_keras.search`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aca_keras.channels.allocation import list_allocators
from aca_keras.cli import DefaultsHelpFormatter, add_strategy_argument, run_cli
from aca_keras.searching.config import defaults
from aca_keras.space.op_sets import OP_SETS

#: SearchConfig's defaults: the flags below show them and leave them to SearchConfig
DEFAULTS = defaults()

#: the built-in channel scorers and pooling rules, spelled here for --help: their registry
#: (aca_keras.channels.importance) imports TensorFlow, which the commands import only after
#: quiet_startup(); tests/test_reallocate.py checks these against list_scorers() and
#: list_poolings(). The allocators' registry is pure NumPy and is read as it is.
SCORERS = ("taylor", "refill", "magnitude", "alpha")
POOLINGS = ("index", "sorted", "rank")

#: the built-in search variants with a short note, spelled here for --help for the same reason
#: (aca_keras.searching.variants imports TensorFlow); tests/test_variants.py checks the names
#: against list_variants()
VARIANTS = {
    "darts": "plain DARTS",
    "pc_darts": "partial channels, edge normalisation, alpha warm-up",
    "beta_darts": "beta-decay regularisation",
    "sdarts_rs": "random smoothing: the weight step sees perturbed alphas",
}

#: the settings --reallocate may change (aca_keras.searching.reallocate.REALLOCATION_SETTINGS)
REALLOCATE_FLAGS = {"scorer": "--scorer", "pooling": "--pooling",
                    "divide_weight": "--divide-weight", "allocator": "--allocator"}

#: (flag, SearchConfig field, type, help) of every search setting on the command line; a
#: flag left out passes nothing, so the setting keeps SearchConfig's default (or, with
#: --resume, the run's own)
SEARCH_SETTINGS: tuple[tuple[str, str, type, str], ...] = (
    ("--epochs", "epochs", int, "search epochs; with --resume, the run's own count unless a "
                                "larger one is given"),
    ("--ops", "ops", str, "operation set: 'aca' (no skip_connect), 'darts', R-DARTS's "
                          "'rdarts-s2', 'rdarts-s3', 'rdarts-s4' and their '-aca' forms, or "
                          "a comma-separated list of registered operations"),
    ("--order", "order", int, "1: first-order DARTS; 2: unrolled second-order hypergradient"),
    ("--variant", "variant", str, "search variant: " + ", ".join(
        f"{name} ({note})" for name, note in VARIANTS.items())),
    ("--partial-k", "partial_k", int, "PC-DARTS: edges see C/K channels (default: 4 for pc_darts)"),
    ("--alpha-warmup-epochs", "alpha_warmup_epochs", int,
     "epochs with frozen architecture weights (default: 15 for pc_darts, clipped to "
     "epochs-1; else 0)"),
    ("--beta-decay-weight", "beta_decay_weight", float,
     "beta_darts: end of the linear beta-decay ramp (default: 1 for beta_darts)"),
    ("--perturbation-epsilon", "perturbation_epsilon", float,
     "sdarts_rs: end of the per-epoch ramp (from 0.03) of the uniform perturbation of the "
     "softmaxed alphas in the weight step (default: 0.3 for sdarts_rs)"),
    ("--cells", "cells", int, "supernet cells"),
    ("--channels", "channels", int, "supernet initial channels C"),
    ("--nodes", "nodes", int, "intermediate nodes per cell"),
    ("--batch-size", "batch_size", int, "batch of each half"),
    ("--test-fraction", "test_fraction", float,
     "hold out this share of the training data (fixed seed) before searching; aca-train on "
     "the run trains on the rest and evaluates on it"),
    ("--search-images", "search_images", int,
     "search on the first N training images only (after --test-fraction); default: all"),
    ("--train-fraction", "train_fraction", float,
     "share of the training set that trains weights (rest: alphas)"),
    ("--learning-rate", "learning_rate", float, "weight SGD learning rate"),
    ("--alpha-learning-rate", "alpha_learning_rate", float, "alpha Adam learning rate"),
    ("--scorer", "scorer", str, f"channel scorer: {', '.join(SCORERS)} (taylor scores a "
                                "channel's removal, refill its identity refill)"),
    ("--pooling", "pooling", str, "how a cell type's occurrences are combined: "
                                  f"{', '.join(POOLINGS)}"),
    ("--divide-weight", "divide_weight", bool,
     "divide each edge's channel scores by its operation's softmax weight (compare edges by "
     "their channels, not by alpha)"),
    ("--allocator", "allocator", str, f"channel allocator: {', '.join(list_allocators())}"),
    ("--score-batches", "score_batches", int, "validation batches used to score channels"),
    ("--hessian-every", "hessian_every", int,
     "collapse monitor: the Hessian eigenvalue of the validation loss w.r.t. the alphas every "
     "N epochs (0: off)"),
    ("--hessian-iterations", "hessian_iterations", int,
     "collapse monitor: Lanczos steps (Hessian-vector products) per measurement"),
    ("--eval-cells", "eval_cells", int, "cells of the derived model"),
    ("--eval-channels", "eval_channels", int, "initial channels of the derived model"),
    ("--no-auxiliary", "auxiliary", bool, "derived model without the auxiliary head"),
    ("--drop-path", "drop_path", float, "derived model drop path"),
    ("--recompute", "recompute", bool,
     "recompute each supernet cell's forward pass in the backward pass: much less memory, "
     "one more forward computation per step"),
    ("--layout", "layout", str,
     "supernet edge layout: grouped (the default: each node's edges as one wide operation) "
     "or per_edge (one layer per edge: the layout of supernets saved before; same numbers, a "
     "step graph twice the size)"),
    ("--no-sync-batch-norm", "sync_batch_norm", bool,
     "with --strategy: BatchNorm statistics per replica instead of over the global batch "
     "(smaller graph, other results)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aca-search",
        description="Search a DARTS cell with Adaptive Channel Allocation and write a run "
                    "directory (config, history, alphas, checkpoint, genotype, architecture, "
                    "derived model, pictures).",
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--dataset", default=None,
                        help="TFDS name (cifar10, cifar100, svhn_cropped, mnist, fashion_mnist), "
                             "'digits' (bundled, no download), an .npz with x and y, or an "
                             "image folder with one sub-folder per class (default: digits; "
                             "with --resume or --reallocate, the run's own)")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding a prepared copy")
    parser.add_argument("--no-download", action="store_true",
                        help="never download; fail at once if the data is not prepared")
    parser.add_argument("--run-dir", default=None,
                        help="output directory (default runs/search-<dataset>-<time>)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue an interrupted search from its last checkpoint")
    parser.add_argument("--reallocate", metavar="RUN_DIR", default=None,
                        help="score and allocate the channels of RUN_DIR's searched supernet "
                             "again (its checkpoint), with --scorer, --pooling, "
                             "--divide-weight and --allocator, into a new --run-dir; the other "
                             "settings stay the run's own")
    for flag, name, kind, text in SEARCH_SETTINGS:
        if kind is bool:  # a switch that turns a default-True setting off, or on
            parser.add_argument(flag, dest=name, action="store_const",
                                const=not DEFAULTS[name], default=None, help=text)
        else:
            shown = "" if DEFAULTS[name] is None else f" (default: {DEFAULTS[name]})"
            parser.add_argument(flag, dest=name, type=kind, default=None, help=text + shown)
    parser.add_argument("--seed", type=int, default=None,
                        help="seed (reproducible on CPU); drawn and recorded when omitted")
    add_strategy_argument(parser)
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 on a GPU, mixed_bfloat16 on the CPU (alphas and "
                             "loss stay float32); ignored with --resume (the run keeps its own)")
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="write TensorBoard event files to DIR: losses, accuracies, learning "
                             "rates, collapse-monitor figures and the alphas of each cell as an "
                             "image, per epoch")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aca-search``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.reallocate:
        _check_reallocate_flags(parser, args)

    def run() -> int:
        # imported after run_cli's quiet_startup(): the search imports TensorFlow, whose
        # start-up lines are silenced only then
        from aca_keras.searching.pipeline import search
        from aca_keras.searching.reallocate import reallocate

        verbose = 0 if args.quiet else 2
        if args.reallocate:
            settings = {name: getattr(args, name) for name in REALLOCATE_FLAGS
                        if getattr(args, name) is not None}
            reallocate(args.reallocate, args.run_dir, dataset=args.dataset, verbose=verbose,
                       **settings)
            if args.quiet:
                print(f"run directory: {args.run_dir}")
            return 0
        if args.resume:
            model = search(run_dir=args.resume, resume=True, verbose=verbose, epochs=args.epochs,
                           strategy=args.strategy, tensorboard=args.tensorboard)
            run_dir = args.resume
        else:
            settings = {name: getattr(args, name) for _, name, _, _ in SEARCH_SETTINGS
                        if getattr(args, name) is not None}
            if "ops" in settings and settings["ops"] not in OP_SETS:
                settings["ops"] = settings["ops"].split(",")
            model = search(
                args.dataset or "digits", seed=args.seed, run_dir=args.run_dir,
                data_dir=args.data_dir,
                download=False if args.no_download else None, verbose=verbose,
                strategy=args.strategy, mixed_precision=args.mixed_precision,
                tensorboard=args.tensorboard, **settings)
            run_dir = model.run_dir
        print(f"run directory: {run_dir}")
        return 0

    return run_cli(run, prog="aca-search", parser=parser,
                   phrases=(("resume=True (CLI: --resume)", "--resume RUN_DIR"),
                            ("as `dataset` (CLI: --dataset)", "with --dataset")))


def _check_reallocate_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--reallocate takes a --run-dir and, of the search settings, only the scoring and
    allocation ones (parser.error otherwise: exit status 2)."""
    if args.resume:
        parser.error("--reallocate and --resume exclude each other")
    if args.run_dir is None:
        parser.error("--reallocate needs --run-dir, the new run directory")
    others = sorted(flag for flag, name, _, _ in SEARCH_SETTINGS
                    if name not in REALLOCATE_FLAGS and getattr(args, name) is not None)
    others += [flag for flag, given in (("--seed", args.seed is not None),
                                        ("--data-dir", args.data_dir is not None),
                                        ("--no-download", args.no_download),
                                        ("--mixed-precision", args.mixed_precision),
                                        ("--tensorboard", args.tensorboard is not None),
                                        ("--strategy", args.strategy != "default")) if given]
    if others:
        parser.error(f"--reallocate keeps the run's own search settings; only "
                     f"{', '.join(REALLOCATE_FLAGS.values())} (and --dataset for a run on "
                     f"in-memory data) apply, not {', '.join(others)}")


if __name__ == "__main__":
    sys.exit(main())
