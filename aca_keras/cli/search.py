"""``aca-search``: run an ACA architecture search (see :func:`aca_keras.search`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aca_keras.cli import DefaultsHelpFormatter, run_cli


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
    parser.add_argument("--epochs", type=int, default=None,
                        help="search epochs (default 50; with --resume, the run's own count "
                             "unless a larger one is given)")
    parser.add_argument("--ops", default="aca",
                        help="operation set: 'aca' (no skip_connect), 'darts', R-DARTS's 'rdarts-s2', "
                             "'rdarts-s3', 'rdarts-s4' and their '-aca' forms, or a "
                             "comma-separated list of registered operations")
    parser.add_argument("--order", type=int, choices=(1, 2), default=1,
                        help="1: first-order DARTS; 2: unrolled second-order hypergradient")
    parser.add_argument("--variant", default="darts", choices=("darts", "pc_darts", "beta_darts"),
                        help="search variant: DARTS, PC-DARTS (partial channels, edge "
                             "normalisation, alpha warm-up) or beta-DARTS (beta-decay)")
    parser.add_argument("--partial-k", type=int, default=None,
                        help="PC-DARTS: edges see C/K channels (default 4)")
    parser.add_argument("--alpha-warmup-epochs", type=int, default=None,
                        help="epochs with frozen architecture weights (default: 15 for "
                             "pc_darts, clipped to epochs-1; else 0)")
    parser.add_argument("--beta-decay-weight", type=float, default=None,
                        help="beta_darts: end of the linear beta-decay ramp (default 1)")
    parser.add_argument("--cells", type=int, default=8, help="supernet cells")
    parser.add_argument("--channels", type=int, default=16, help="supernet initial channels C")
    parser.add_argument("--nodes", type=int, default=4, help="intermediate nodes per cell")
    parser.add_argument("--batch-size", type=int, default=64, help="batch of each half")
    parser.add_argument("--train-fraction", type=float, default=0.5,
                        help="share of the training set that trains weights (rest: alphas)")
    parser.add_argument("--learning-rate", type=float, default=0.025, help="weight SGD lr")
    parser.add_argument("--alpha-learning-rate", type=float, default=3e-4, help="alpha Adam lr")
    parser.add_argument("--scorer", default="taylor",
                        help="channel scorer: taylor (removal), refill (identity refill), "
                             "magnitude, alpha")
    parser.add_argument("--pooling", default="index",
                        help="how a cell type's occurrences are combined: index, sorted, rank")
    parser.add_argument("--divide-weight", action="store_true",
                        help="divide each edge's channel scores by its operation's softmax "
                             "weight (compare edges by their channels, not by alpha)")
    parser.add_argument("--allocator", default="adaptive",
                        help="channel allocator: adaptive, fixed, alpha, none")
    parser.add_argument("--hessian-every", type=int, default=1,
                        help="collapse monitor: the Hessian eigenvalue of the validation loss "
                             "w.r.t. the alphas every N epochs (0: off)")
    parser.add_argument("--hessian-iterations", type=int, default=20,
                        help="collapse monitor: power iterations per measurement")
    parser.add_argument("--score-batches", type=int, default=16,
                        help="validation batches used to score channels")
    parser.add_argument("--eval-cells", type=int, default=20, help="cells of the derived model")
    parser.add_argument("--eval-channels", type=int, default=36,
                        help="initial channels of the derived model")
    parser.add_argument("--no-auxiliary", action="store_true",
                        help="derived model without the auxiliary head")
    parser.add_argument("--drop-path", type=float, default=0.2, help="derived model drop path")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed (reproducible on CPU); drawn and recorded when omitted")
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                        default="default",
                        help="devices: 'mirrored' (all GPUs of this machine), 'multiworker' "
                             "(several machines, set TF_CONFIG on each); --batch-size stays "
                             "the global batch (see docs/scaling.md)")
    parser.add_argument("--no-sync-batch-norm", action="store_true",
                        help="with --strategy: BatchNorm statistics per replica instead of "
                             "over the global batch (smaller graph, other results)")
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
            from aca_keras.layers.ops import OP_SETS  # a Keras module: after quiet_startup()

            ops = args.ops if args.ops in OP_SETS else args.ops.split(",")
            model = search(
                args.dataset, epochs=args.epochs, ops=ops, order=args.order, cells=args.cells,
                channels=args.channels, nodes=args.nodes, batch_size=args.batch_size,
                seed=args.seed, run_dir=args.run_dir, data_dir=args.data_dir,
                download=not args.no_download, verbose=verbose, strategy=args.strategy,
                mixed_precision=args.mixed_precision,
                sync_batch_norm=not args.no_sync_batch_norm, train_fraction=args.train_fraction, learning_rate=args.learning_rate,
                alpha_learning_rate=args.alpha_learning_rate, scorer=args.scorer,
                allocator=args.allocator, score_batches=args.score_batches,
                pooling=args.pooling, divide_weight=args.divide_weight,
                hessian_every=args.hessian_every, hessian_iterations=args.hessian_iterations,
                eval_cells=args.eval_cells, eval_channels=args.eval_channels,
                auxiliary=not args.no_auxiliary, drop_path=args.drop_path,
                variant=args.variant, partial_k=args.partial_k,
                alpha_warmup_epochs=args.alpha_warmup_epochs,
                beta_decay_weight=args.beta_decay_weight)
            run_dir = model.run_dir
        print(f"run directory: {run_dir}")
        return 0

    return run_cli(run, prog="aca-search", parser=parser,
                   phrases=(("resume=True (CLI: --resume)", "--resume RUN_DIR"),))


if __name__ == "__main__":
    sys.exit(main())
