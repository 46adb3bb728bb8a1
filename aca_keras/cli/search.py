"""``aca-search``: run an ACA architecture search (see :func:`aca_keras.search`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aca_keras.cli import DefaultsHelpFormatter, add_strategy_argument, run_cli
from aca_keras.searching.config import defaults
from aca_keras.space.op_sets import OP_SETS

#: SearchConfig's defaults: the flags below show them and leave them to SearchConfig
DEFAULTS = defaults()

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
    ("--variant", "variant", str, "search variant: darts, pc_darts (partial channels, edge "
                                  "normalisation, alpha warm-up) or beta_darts (beta-decay)"),
    ("--partial-k", "partial_k", int, "PC-DARTS: edges see C/K channels (default: 4 for pc_darts)"),
    ("--alpha-warmup-epochs", "alpha_warmup_epochs", int,
     "epochs with frozen architecture weights (default: 15 for pc_darts, clipped to "
     "epochs-1; else 0)"),
    ("--beta-decay-weight", "beta_decay_weight", float,
     "beta_darts: end of the linear beta-decay ramp (default: 1 for beta_darts)"),
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
    ("--scorer", "scorer", str, "channel scorer: taylor (removal), refill (identity refill), "
                                "magnitude, alpha"),
    ("--pooling", "pooling", str, "how a cell type's occurrences are combined: index, sorted, "
                                  "rank"),
    ("--divide-weight", "divide_weight", bool,
     "divide each edge's channel scores by its operation's softmax weight (compare edges by "
     "their channels, not by alpha)"),
    ("--allocator", "allocator", str, "channel allocator: adaptive, fixed, alpha, none"),
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
    parser.add_argument("--dataset", default="digits",
                        help="TFDS name (cifar10, cifar100, svhn_cropped, mnist, fashion_mnist), "
                             "'digits' (bundled, no download), an .npz with x and y, or an "
                             "image folder with one sub-folder per class")
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir holding a prepared copy")
    parser.add_argument("--no-download", action="store_true",
                        help="never download; fail at once if the data is not prepared")
    parser.add_argument("--run-dir", default=None,
                        help="output directory (default runs/search-<dataset>-<time>)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue an interrupted search from its last checkpoint")
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
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aca-search``."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def run() -> int:
        # imported after run_cli's quiet_startup(): the search imports TensorFlow, whose
        # start-up lines are silenced only then
        from aca_keras.searching.pipeline import search

        verbose = 0 if args.quiet else 2
        if args.resume:
            model = search(run_dir=args.resume, resume=True, verbose=verbose, epochs=args.epochs,
                           strategy=args.strategy)
            run_dir = args.resume
        else:
            settings = {name: getattr(args, name) for _, name, _, _ in SEARCH_SETTINGS
                        if getattr(args, name) is not None}
            if "ops" in settings and settings["ops"] not in OP_SETS:
                settings["ops"] = settings["ops"].split(",")
            model = search(
                args.dataset, seed=args.seed, run_dir=args.run_dir, data_dir=args.data_dir,
                download=False if args.no_download else None, verbose=verbose,
                strategy=args.strategy, mixed_precision=args.mixed_precision, **settings)
            run_dir = model.run_dir
        print(f"run directory: {run_dir}")
        return 0

    return run_cli(run, prog="aca-search", parser=parser,
                   phrases=(("resume=True (CLI: --resume)", "--resume RUN_DIR"),))


if __name__ == "__main__":
    sys.exit(main())
