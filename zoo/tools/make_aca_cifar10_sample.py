"""(Re)create the zoo entry ``aca-darts-cifar10-sample``: an ACA cell searched and trained by
aca_keras on the 4,660-image CIFAR-10 sample, with weights, ONNX export and full provenance.

    python zoo/tools/make_aca_cifar10_sample.py \\
        [--data ../shared/data/cifar10-sample/train.npz] [--work /tmp/aca-zoo-cifar10-sample] \\
        [--search-epochs 4] [--train-epochs 15] [--seed 0] [--zoo-dir zoo]

Steps (each timed; everything recorded in the entry):

1. ``aca_keras.data.load(npz, test_fraction=0.2)``: 3,728 training images and a fixed-seed
   held-out test part of 932 images, never seen by the search or the training.
2. ``aca_keras.search`` (ACA operation set, first-order DARTS, Taylor channel scoring,
   adaptive allocation) on the 3,728 images: supernet 5 cells, C = 8, 32x32 images.
3. ``aca_keras.training.train_run``: the derived network with 8 cells, C = 16, no auxiliary
   head, trained on the 3,728 images; top-1 accuracy measured on the 932 held-out images.
4. ``aca_keras.zoo.publish`` of the run directory with the ONNX export (verified).

The settings are tiny on purpose (a shared 2-core CPU machine, about 15 minutes in all): the
entry demonstrates the pipeline end to end on real data; its accuracy is far from what a full
search and 600-epoch training on all of CIFAR-10 give.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAME = "aca-darts-cifar10-sample"
SAMPLE_DESCRIPTION = (
    "CIFAR-10 sample: 4,660 real CIFAR-10 training images (the first 932 of each of the five "
    "training batches of the CIFAR-10 python release), 32x32 RGB, 10 classes")


def hardware() -> str:
    """CPU model, core count and load: what this run had."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"CPU only: {os.cpu_count()} cores ({model}), {platform.system()} "
            f"{platform.machine()}; a machine shared with other jobs (load average {load} at "
            "the start)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10-sample"
                                              / "train.npz"))
    parser.add_argument("--work", default="/tmp/aca-zoo-cifar10-sample",
                        help="scratch directory for the run (replaced)")
    parser.add_argument("--zoo-dir", default=str(REPO / "zoo"))
    parser.add_argument("--search-epochs", type=int, default=4)
    parser.add_argument("--train-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--date", default=None, help="publication date (default: today)")
    args = parser.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in
                                   [os.path.relpath(__file__, REPO), *sys.argv[1:]])

    from aca_keras import zoo
    from aca_keras.data import loading as data
    from aca_keras.searching.pipeline import search
    from aca_keras.training.trainer import train_run
    from aca_keras.versions import package_versions

    machine = hardware()
    versions = {k: v for k, v in package_versions().items() if k != "machine"}
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    run_dir = work / "run"

    bundle = data.load(Path(args.data), test_fraction=0.2, class_names=data.CIFAR10_CLASS_NAMES,
                       flip=True, name="cifar10-sample")
    print(f"data: {bundle}", flush=True)

    t0 = time.perf_counter()
    search(bundle, run_dir=run_dir, epochs=args.search_epochs, ops="aca", order=1, cells=5,
           channels=8, nodes=4, batch_size=64, seed=args.seed, eval_cells=8,
           eval_channels=16, auxiliary=False, drop_path=0.0, score_batches=10, verbose=2)
    search_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = train_run(run_dir, epochs=args.train_epochs, batch_size=96, dataset=bundle,
                       seed=args.seed, verbose=2)
    train_s = time.perf_counter() - t0
    accuracy = float(result.test_accuracy)

    split = (f"held-out 20% of the CIFAR-10 sample: {bundle.num_test} images chosen by "
             "aca_keras.data.load(test_fraction=0.2) with its fixed seed, never seen by the "
             "search or the training")
    data_path = Path(args.data).resolve()
    shown = (os.path.relpath(data_path, REPO) if data_path.is_relative_to(REPO.parent)
             else str(data_path))
    data_text = (f"{shown} (the CIFAR-10 sample) loaded with "
                 "aca_keras.data.load(test_fraction=0.2): "
                 f"{bundle.num_train:,} images for search and training, {bundle.num_test:,} "
                 "held out")
    note = ("The wall time is measured around this stage only (data loading, export and "
            "publishing excluded).")
    t0 = time.perf_counter()
    entry = zoo.publish(
        run_dir, NAME, zoo_dir=args.zoo_dir, overwrite=True, date=args.date,
        title="ACA cell searched and trained on the CIFAR-10 sample (tiny settings)",
        summary=("An ACA cell pair searched by aca_keras (DARTS first order without "
                 "skip_connect, Taylor channel importance, adaptive Otsu allocation) on a "
                 "4,660-image sample of CIFAR-10, in an 8-cell, C = 16 network trained for "
                 f"{args.train_epochs} epochs on {bundle.num_train:,} of those images. A small, "
                 "honest demonstration of the pipeline on real data, with trained weights and "
                 "an ONNX export; not a competitive CIFAR-10 model."),
        dataset={"name": "cifar10-sample", "description": SAMPLE_DESCRIPTION,
                 "class_names": list(data.CIFAR10_CLASS_NAMES),
                 "train_images": bundle.num_train, "test_images": bundle.num_test,
                 "notes": ("The normalisation statistics were computed by aca_keras on the "
                           f"{bundle.num_train} training images of the sample. The sample is "
                           "shipped to the project's build machines, which cannot download "
                           "CIFAR-10; the full data set is tfds.load('cifar10').")},
        metrics=[{"name": "top1_accuracy", "value": round(100 * accuracy, 2), "unit": "%",
                  "split": split, "how": "measured",
                  "source": ("aca_keras.training.train_run: accuracy of the inference model "
                             f"after {args.train_epochs} epochs (train_result.json)"),
                  "note": (f"{round(accuracy * bundle.num_test)} of {bundle.num_test} images; "
                           "one run, one seed: no spread is known")}],
        provenance={
            "search": {"command": command, "hardware": machine,
                       "wall_time_s": round(search_s, 1), "versions": versions,
                       "data": data_text, "note": note},
            "training": {"command": command, "hardware": machine,
                         "wall_time_s": round(train_s, 1), "versions": versions,
                         "data": data_text, "note": note},
        },
        exports=("onnx",),
        tags=["aca", "cifar10-sample", "trained", "tiny"],
        notes=[f"Trained and evaluated on a 4,660-image sample of CIFAR-10 ({bundle.num_train:,} "
               f"images to search and train, {bundle.num_test} held out), with tiny settings: "
               f"{args.search_epochs} search epochs of a 5-cell, C = 8 supernet and "
               f"{args.train_epochs} training epochs of the 8-cell, C = 16 network. Its "
               "accuracy says nothing about ACA on full CIFAR-10 (DARTS's protocol is 50 "
               "search epochs and 600 training epochs on 50,000 images).",
               "Search and training ran on a shared 2-core CPU machine; the wall times "
               "include the time the other jobs took from it.",
               f"Re-create it with: {command}"],
    )
    publish_s = time.perf_counter() - t0
    summary = {"name": entry.name, "top1_accuracy": accuracy, "params": entry.params,
               "search_s": search_s, "train_s": train_s, "publish_s": publish_s,
               "command": command, "hardware": machine,
               "artifacts": [a.to_dict() for a in entry.artifacts]}
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
