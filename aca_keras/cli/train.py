"""``aca-train``: train the derived network of a search run (thin front end over
:func:`aca_keras.training.train_run`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aca_keras.cli import add_strategy_argument, run_cli
from aca_keras.io.run_dir import RunDir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aca-train",
        description="Train the derived network of a search run directory with DARTS's "
                    "evaluation recipe (SGD + cosine, cutout, drop path, auxiliary head), "
                    f"writing the checkpoint, history and {RunDir.TRAINED_MODEL} into that "
                    "directory.")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help=f"search run directory holding {RunDir.ARCHITECTURE} and "
                             f"{RunDir.CONFIG}")
    parser.add_argument("--epochs", type=int, default=600,
                        help="training epochs (default: 600, as DARTS)")
    parser.add_argument("--batch-size", type=int, default=96,
                        help="batch size (default: 96)")
    parser.add_argument("--cells", type=int, default=None,
                        help=f"number of cells (default: eval_cells of {RunDir.CONFIG}, else 20)")
    parser.add_argument("--channels", type=int, default=None,
                        help=f"initial channels C (default: eval_channels of {RunDir.CONFIG}, "
                             "else 36)")
    parser.add_argument("--dataset", default=None, metavar="NAME_OR_PATH",
                        help=f"data set name or path (default: the dataset of {RunDir.CONFIG})")
    parser.add_argument("--data-dir", default=None,
                        help=f"TFDS data directory (default: data_dir of {RunDir.CONFIG})")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of weights, data order, augmentation and drop path "
                             f"(default: the seed of {RunDir.CONFIG})")
    parser.add_argument("--resume", action="store_true",
                        help="continue the training from the run's last "
                             f"{RunDir.TRAIN_CHECKPOINT_DIR}")
    parser.add_argument("--no-auxiliary", action="store_true",
                        help="build the model without the auxiliary head")
    parser.add_argument("--auxiliary-weight", type=float, default=0.4,
                        help="weight of the auxiliary loss (default: 0.4)")
    parser.add_argument("--drop-path", type=float, default=None,
                        help="final drop path rate of the linear ramp (default: drop_path of "
                             f"{RunDir.CONFIG}, else 0.2)")
    parser.add_argument("--learning-rate", type=float, default=0.025,
                        help="initial learning rate, cosine-decayed to 0 (default: 0.025)")
    parser.add_argument("--momentum", type=float, default=0.9,
                        help="SGD momentum (default: 0.9)")
    parser.add_argument("--weight-decay", type=float, default=3e-4,
                        help="coupled L2 weight decay (default: 3e-4)")
    parser.add_argument("--grad-clip", type=float, default=5.0,
                        help="global-norm gradient clip, 0 for none (default: 5)")
    parser.add_argument("--cutout", type=int, default=16,
                        help="cutout size, capped at half the image side, 0 for none "
                             "(default: 16)")
    parser.add_argument("--jit-compile", action="store_true",
                        help="XLA-compile the train step")
    add_strategy_argument(parser)
    parser.add_argument("--no-sync-batch-norm", action="store_true",
                        help="with --strategy: BatchNorm statistics per replica instead of "
                             "over the global batch (smaller graph, other results)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 on a GPU, mixed_bfloat16 on the CPU")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aca-train``; returns the exit status (0 on success, 1 on an error,
    printed as one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def run() -> int:
        # imported after run_cli's quiet_startup(): training imports TensorFlow, whose
        # start-up lines are silenced only then
        from aca_keras.training.trainer import train_run

        result = train_run(
            args.run_dir, epochs=args.epochs, batch_size=args.batch_size, cells=args.cells,
            channels=args.channels, dataset=args.dataset, data_dir=args.data_dir,
            seed=args.seed, resume=args.resume,
            auxiliary=False if args.no_auxiliary else None,
            auxiliary_weight=args.auxiliary_weight, drop_path=args.drop_path,
            learning_rate=args.learning_rate, momentum=args.momentum,
            weight_decay=args.weight_decay, grad_clip=args.grad_clip or None,
            cutout=args.cutout, verbose=args.verbose, jit_compile=args.jit_compile,
            strategy=args.strategy, mixed_precision=args.mixed_precision,
            sync_batch_norm=not args.no_sync_batch_norm)
        if args.verbose:
            accuracy = ("n/a (no test split)" if result.test_accuracy is None
                        else f"{result.test_accuracy:.4f}")
            print(f"trained model: {RunDir(result.run_dir).trained_model}, test accuracy "
                  f"{accuracy}")
        return 0

    return run_cli(run, prog="aca-train", parser=parser)


if __name__ == "__main__":
    sys.exit(main())
