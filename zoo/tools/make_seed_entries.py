"""(Re)create the zoo's architecture-only seed entries: the published DARTS-space cells.

    python zoo/tools/make_seed_entries.py [--zoo-dir zoo]

Each entry holds a published CIFAR-10 cell as the papers and their official releases state
it (k_e = C on every edge: ``Architecture.from_genotype``), DARTS's evaluation macro settings
(20 cells, C = 36, auxiliary head), the papers' figures labelled as such and cited, and the
parameter counts of the network aca_keras builds (measured when this script runs).
The genotypes below are facts from the papers; no code was taken from their releases.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CIFAR10_SPLIT = "CIFAR-10 test set (10,000 images)"

DARTS_BIBTEX = """@inproceedings{liu2019darts,
  title = {{DARTS}: Differentiable Architecture Search},
  author = {Liu, Hanxiao and Simonyan, Karen and Yang, Yiming},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year = {2019}
}"""
PC_DARTS_BIBTEX = """@inproceedings{xu2020pcdarts,
  title = {{PC-DARTS}: Partial Channel Connections for Memory-Efficient Architecture Search},
  author = {Xu, Yuhui and Xie, Lingxi and Zhang, Xiaopeng and Chen, Xin and Qi, Guo-Jun and
            Tian, Qi and Xiong, Hongkai},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year = {2020}
}"""
P_DARTS_BIBTEX = """@inproceedings{chen2019pdarts,
  title = {Progressive Differentiable Architecture Search: Bridging the Depth Gap between
           Search and Evaluation},
  author = {Chen, Xin and Xie, Lingxi and Wu, Jun and Tian, Qi},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)},
  year = {2019}
}"""

DARTS_CITATION = {
    "text": "H. Liu, K. Simonyan, Y. Yang. DARTS: Differentiable Architecture Search. ICLR 2019. "
            "arXiv:1806.09055.",
    "url": "https://arxiv.org/abs/1806.09055", "bibtex": DARTS_BIBTEX}
PC_DARTS_CITATION = {
    "text": "Y. Xu, L. Xie, X. Zhang, X. Chen, G.-J. Qi, Q. Tian, H. Xiong. PC-DARTS: Partial "
            "Channel Connections for Memory-Efficient Architecture Search. ICLR 2020. "
            "arXiv:1907.05737.",
    "url": "https://arxiv.org/abs/1907.05737", "bibtex": PC_DARTS_BIBTEX}
P_DARTS_CITATION = {
    "text": "X. Chen, L. Xie, J. Wu, Q. Tian. Progressive Differentiable Architecture Search: "
            "Bridging the Depth Gap between Search and Evaluation. ICCV 2019. "
            "arXiv:1904.12760.",
    "url": "https://arxiv.org/abs/1904.12760", "bibtex": P_DARTS_BIBTEX}

# DARTS's evaluation recipe on CIFAR-10 (the papers below evaluate their cells the same way
# unless noted).
DARTS_TRAINING = {"cells": 20, "channels": 36, "epochs": 600, "batch_size": 96,
                  "learning_rate": "0.025, cosine", "momentum": 0.9, "weight_decay": 3e-4,
                  "cutout": 16, "drop_path": 0.2, "auxiliary_weight": 0.4, "grad_clip": 5}
DARTS_SEARCH = {"supernet_cells": 8, "supernet_channels": 16, "nodes": 4,
                "operations": "DARTS's 8 (with none and skip_connect)", "epochs": 50,
                "batch_size": 64, "data": "CIFAR-10 training set, halves for weights and "
                                          "architecture"}

# name: (genotype, title, summary, metrics, search provenance, training note, citation, tags)
SEEDS = {
    "darts-v1-cifar10": dict(
        normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0),
                ("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 0), ("skip_connect", 2)],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2),
                ("max_pool_3x3", 0), ("max_pool_3x3", 0), ("skip_connect", 2),
                ("skip_connect", 2), ("avg_pool_3x3", 0)],
        title="DARTS V1 (first-order DARTS) cell, CIFAR-10",
        summary="The cell found by first-order DARTS on CIFAR-10 (DARTS_V1 in the official "
                "release), in DARTS's 20-cell, C = 36 evaluation network with the auxiliary "
                "head. Architecture only: the metrics are the paper's.",
        error=(3.00, 0.14), params_m=3.3, paper_row="DARTS (first order) + cutout",
        search={**DARTS_SEARCH, "variant": "DARTS, first order"}, cost="1.5 GPU-days",
        reference="Liu et al., ICLR 2019 (arXiv:1806.09055)", citation=DARTS_CITATION,
        tags=["darts", "first-order", "paper"]),
    "darts-v2-cifar10": dict(
        normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
                ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 0),
                ("skip_connect", 0), ("dil_conv_3x3", 2)],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2),
                ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("skip_connect", 2),
                ("skip_connect", 2), ("max_pool_3x3", 1)],
        title="DARTS V2 (second-order DARTS) cell, CIFAR-10",
        summary="The cell found by second-order DARTS on CIFAR-10 (DARTS_V2 in the official "
                "release, the cell the paper evaluates), in DARTS's 20-cell, C = 36 "
                "evaluation network with the auxiliary head. Architecture only: the metrics "
                "are the paper's.",
        error=(2.76, 0.09), params_m=3.3, paper_row="DARTS (second order) + cutout",
        search={**DARTS_SEARCH, "variant": "DARTS, second order (unrolled)"},
        cost="4 GPU-days", reference="Liu et al., ICLR 2019 (arXiv:1806.09055)",
        citation=DARTS_CITATION, tags=["darts", "second-order", "paper"]),
    "pc-darts-cifar10": dict(
        normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0),
                ("dil_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 1),
                ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1),
                ("sep_conv_5x5", 2), ("sep_conv_3x3", 0), ("sep_conv_3x3", 3),
                ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
        title="PC-DARTS cell, CIFAR-10",
        summary="The cell found by PC-DARTS (partial channel connections, K = 4, with edge "
                "normalisation) on CIFAR-10, in DARTS's 20-cell, C = 36 evaluation network "
                "with the auxiliary head. Architecture only: the metrics are the paper's.",
        error=(2.57, 0.07), params_m=3.6, paper_row="PC-DARTS (CIFAR-10)",
        search={**DARTS_SEARCH, "variant": "PC-DARTS", "partial_channels_k": 4,
                "edge_normalization": True, "batch_size": 256, "learning_rate": 0.1,
                "alpha_learning_rate": 6e-4, "alphas_frozen_epochs": 15},
        cost="0.1 GPU-days", reference="Xu et al., ICLR 2020 (arXiv:1907.05737)",
        citation=PC_DARTS_CITATION, tags=["pc-darts", "paper"]),
    "p-darts-cifar10": dict(
        normal=[("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0),
                ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("sep_conv_3x3", 3),
                ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        reduce=[("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0),
                ("dil_conv_5x5", 2), ("max_pool_3x3", 0), ("dil_conv_3x3", 1),
                ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
        title="P-DARTS cell, CIFAR-10",
        summary="The cell found by P-DARTS (progressive search, the supernet deepened from 5 "
                "to 11 to 17 cells) on CIFAR-10, in DARTS's 20-cell, C = 36 evaluation "
                "network with the auxiliary head. Architecture only: the metrics are the "
                "paper's.",
        error=(2.50, None), params_m=3.4, paper_row="P-DARTS (CIFAR-10)",
        search={"variant": "P-DARTS", "stages": "3, with 5, 11 and 17 supernet cells",
                "epochs_per_stage": 25, "supernet_channels": 16, "nodes": 4,
                "operations": "DARTS's 8, progressively reduced, skip_connect regularised",
                "data": "CIFAR-10 training set"},
        epochs=75, cost="0.3 GPU-days",
        reference="Chen et al., ICCV 2019 (arXiv:1904.12760)", citation=P_DARTS_CITATION,
        tags=["p-darts", "paper"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo-dir", default=str(REPO / "zoo"))
    parser.add_argument("--date", default=None, help="publication date (default: today)")
    args = parser.parse_args()

    from aca_keras import zoo
    from aca_keras.data import loading as data
    from aca_keras.space.architecture import Architecture
    from aca_keras.space.genotype import Genotype

    cifar = data.KNOWN_DATASETS["cifar10"]
    dataset = {"name": "cifar10", "description": cifar.description, "input_shape": [32, 32, 3],
               "num_classes": 10, "class_names": list(cifar.class_names),
               "mean": list(cifar.mean), "std": list(cifar.std), "train_images": 50000,
               "test_images": 10000}
    macro = {"cells": 20, "channels": 36, "auxiliary": True, "auxiliary_weight": 0.4,
             "drop_path": 0.2, "stem_multiplier": 3}
    for name, seed in SEEDS.items():
        genotype = Genotype(tuple(seed["normal"]), (2, 3, 4, 5), tuple(seed["reduce"]),
                            (2, 3, 4, 5))
        arch = Architecture.from_genotype(
            genotype, 16, "darts", name=name,
            provenance={"source": seed["reference"], "genotype": "as published"})
        error, error_std = seed["error"]
        source = f"{seed['reference']}, Table 1, row '{seed['paper_row']}'"
        metrics = [
            {"name": "test_error", "value": error, "unit": "%", "split": CIFAR10_SPLIT,
             "how": "paper", "source": source,
             "note": "the paper's evaluation network trained with its recipe (600 epochs, "
                     "cutout); mean ± standard deviation as the paper reports it"
                     if error_std is not None else
                     "the paper's evaluation network trained with its recipe (600 epochs, "
                     "cutout)"},
            {"name": "params", "value": seed["params_m"], "unit": "M", "split": "n/a",
             "how": "paper", "source": source,
             "note": "the paper's parameter count (PyTorch, auxiliary head excluded); compare "
                     "the measured count, which aca_keras's build of the same network gives"},
        ]
        if error_std is not None:
            metrics[0]["std"] = error_std
        provenance = {
            "search": {"by": "paper", "reference": seed["reference"],
                       "settings": seed["search"], "epochs": seed.get("epochs", 50),
                       "seed": None, "hardware": None,
                       "cost": f"{seed['cost']} (the paper's figure)"},
            "training": {"by": "paper", "reference": seed["reference"],
                         "settings": DARTS_TRAINING, "epochs": 600, "seed": None,
                         "hardware": None,
                         "note": "Not trained by aca_keras: this entry has no weights. The "
                                 "settings are DARTS's CIFAR-10 recipe, which the paper follows "
                                 "(see the paper for its exact evaluation settings)."},
        }
        entry = zoo.publish(
            arch, name, zoo_dir=args.zoo_dir, title=seed["title"], summary=seed["summary"],
            dataset=dataset, macro=macro, metrics=metrics, provenance=provenance,
            license="Apache-2.0", citation=seed["citation"], tags=seed["tags"] + ["cifar10"],
            notes=["The genotype is the one the paper's official release publishes "
                   "(normal and reduction cells, concat of nodes 2-5); within a node the "
                   "edges are listed by input index.",
                   "The cell is searched with the DARTS operation set (with skip_connect); "
                   "every edge keeps all its channels (k_e = C), i.e. no channel allocation.",
                   "Metrics labelled \"paper's figure\" were not re-measured by aca_keras."],
            overwrite=True, date=args.date)
        print(f"{entry.name}: {entry.params['inference_trainable']:,} trainable parameters "
              f"(inference), paper {seed['params_m']} M")


if __name__ == "__main__":
    main()
