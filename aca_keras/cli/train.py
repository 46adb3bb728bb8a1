"""``aca-train``: train the derived network of a search run, or of an architecture (a zoo
entry or an ``architecture.json``) in a new run directory (thin front end over
:func:`aca_keras.training.train_run`; zoo names are resolved here)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aca_keras.cli import add_strategy_argument, run_cli
from aca_keras.io.run_dir import RunDir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aca-train",
        description="Train the derived network of a search run directory with DARTS's "
                    "evaluation recipe (SGD + cosine, cutout, drop path, auxiliary head), "
                    f"writing the checkpoint, history and {RunDir.TRAINED_MODEL} into that "
                    "directory. With --architecture, train a zoo entry or an "
                    f"{RunDir.ARCHITECTURE} in a new run directory instead (it records the "
                    f"architecture and the settings, so that --resume needs only RUN_DIR).")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help=f"search run directory holding {RunDir.ARCHITECTURE} and "
                             f"{RunDir.CONFIG}; with --architecture, any directory (created "
                             "if missing)")
    parser.add_argument("--architecture", default=None, metavar="NAME_OR_PATH",
                        help="train this architecture: a zoo entry name (aca-zoo list), an "
                             f"{RunDir.ARCHITECTURE} file or a run directory holding one; "
                             f"written to RUN_DIR/{RunDir.ARCHITECTURE} with the settings in "
                             f"RUN_DIR/{RunDir.CONFIG} (a new RUN_DIR needs --dataset)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: 600, as DARTS; with --resume the "
                             "run's)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size (default: 96; with --resume the run's)")
    parser.add_argument("--cells", type=int, default=None,
                        help=f"number of cells (default: eval_cells of {RunDir.CONFIG}, else 20)")
    parser.add_argument("--channels", type=int, default=None,
                        help=f"initial channels C (default: eval_channels of {RunDir.CONFIG}, "
                             "else 36)")
    parser.add_argument("--dataset", default=None, metavar="NAME_OR_PATH",
                        help=f"data set name or path (default: the dataset of {RunDir.CONFIG})")
    parser.add_argument("--data-dir", default=None,
                        help=f"TFDS data directory (default: data_dir of {RunDir.CONFIG})")
    parser.add_argument("--test-fraction", type=float, default=None, metavar="F",
                        help="hold out this share of the training images as the test set "
                             "(when the data set has none): trained without, evaluated on "
                             f"(default: test_fraction of {RunDir.CONFIG}, else none)")
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
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="write TensorBoard event files to DIR: losses, accuracies, "
                             "learning rate and drop path rate per epoch, the test accuracy")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1)")
    return parser


def resolve_architecture(value: str):
    """``(architecture, source)`` of ``--architecture``: an existing file or run directory is
    read (``train_run`` reads it: ``(path, None)``), anything else is a zoo entry name
    (``(Architecture, "zoo:<name>")``).

    Raises:
        FileNotFoundError: ``value`` looks like a path (a separator or a suffix) and there is
            no file there.
        UnknownEntryError: no zoo entry has that name (the message lists the known ones).
    """
    path = Path(value)
    if path.exists():
        return path, None
    if os.sep in value or "/" in value or path.suffix:
        raise FileNotFoundError(
            f"--architecture {value}: no such file, and a zoo entry name has no path "
            f"separator or suffix; give an {RunDir.ARCHITECTURE} file, a run directory "
            "holding one, or a zoo entry name (aca-zoo list).")
    # light at import (no TensorFlow), but read only when --architecture names an entry
    from aca_keras import zoo

    return zoo.architecture(value), f"zoo:{value}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aca-train``; returns the exit status (0 on success, 1 on an error,
    printed as one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def run() -> int:
        # imported after run_cli's quiet_startup(): training imports TensorFlow, whose
        # start-up lines are silenced only then
        from aca_keras.training.trainer import train_run

        architecture = source = None
        if args.architecture is not None:
            architecture, source = resolve_architecture(args.architecture)
        result = train_run(
            args.run_dir, architecture=architecture, architecture_source=source,
            epochs=args.epochs, batch_size=args.batch_size, cells=args.cells,
            channels=args.channels, dataset=args.dataset, data_dir=args.data_dir,
            test_fraction=args.test_fraction, seed=args.seed, resume=args.resume,
            auxiliary=False if args.no_auxiliary else None,
            auxiliary_weight=args.auxiliary_weight, drop_path=args.drop_path,
            learning_rate=args.learning_rate, momentum=args.momentum,
            weight_decay=args.weight_decay, grad_clip=args.grad_clip or None,
            cutout=args.cutout, verbose=args.verbose, jit_compile=args.jit_compile,
            strategy=args.strategy, mixed_precision=args.mixed_precision,
            sync_batch_norm=not args.no_sync_batch_norm, tensorboard=args.tensorboard)
        if args.verbose:
            accuracy = ("n/a (no test split)" if result.test_accuracy is None
                        else f"{result.test_accuracy:.4f}")
            print(f"trained model: {RunDir(result.run_dir).trained_model}, test accuracy "
                  f"{accuracy}")
        return 0

    return run_cli(run, prog="aca-train", parser=parser)


if __name__ == "__main__":
    sys.exit(main())
