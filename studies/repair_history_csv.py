"""Re-align the ``history.csv`` rows that Keras's ``CSVLogger`` shifted in resumed searches.

Before c6f0110 a resumed search appended rows whose columns came from the first resumed
epoch's logs. When that epoch had no ``hessian_eigenvalue`` (the monitor measures every
``hessian_every`` epochs), the row lacked that column and ``val_hessian_eigenvalue`` and
every later figure sat one or two columns left of its header. This script rewrites such
rows under the header, taking ``hessian_eigenvalue`` from the run's ``alphas.jsonl`` (which
was always right), and checks every value it keeps against ``alphas.jsonl`` where both
hold it. Rows that already match the header are left as they are; running it twice
changes nothing.

usage: python studies/repair_history_csv.py RUN_DIR [RUN_DIR ...]
"""
from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

from aca_keras.io.atomic import atomic_write_text
from aca_keras.plots import read_alpha_history

MISSING = ("hessian_eigenvalue", "val_hessian_eigenvalue")
CHECKED = ("skip_edges", "parameter_free_edges", "mean_skip_weight", "hessian_eigenvalue",
           "reduce_skip_edges", "reduce_parameter_free_edges", "loss", "accuracy",
           "alpha_loss", "alpha_accuracy")


def repair(run: Path) -> int:
    """Rewrite ``run/history.csv`` in place; returns the number of rows re-aligned."""
    path = run / "history.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    shifted = [key for key in header if key not in MISSING]
    monitor = {int(record["epoch"]): record
               for record in read_alpha_history(run / "alphas.jsonl")}
    rows, fixed = [], 0
    for line in lines[1:]:
        values = line.split(",")
        if len(values) == len(header):
            row = dict(zip(header, values))
        elif len(values) == len(shifted):
            row = dict(zip(shifted, values))
            hessian = monitor[int(row["epoch"])].get("hessian_eigenvalue")
            row["hessian_eigenvalue"] = "NA" if hessian is None else repr(float(hessian))
            row["val_hessian_eigenvalue"] = "NA"
            fixed += 1
        else:
            raise ValueError(f"{path}: a row of {len(values)} values fits neither "
                             f"{len(header)} nor {len(shifted)} columns: {line[:80]}")
        record = dict(monitor[int(row["epoch"])])
        record.update(record.get("metrics", {}))
        for key in CHECKED:
            if row.get(key, "NA") != "NA" and record.get(key) is not None:
                if not math.isclose(float(row[key]), float(record[key]), rel_tol=1e-6):
                    raise ValueError(f"{path}, epoch {row['epoch']}: {key} is {row[key]} "
                                     f"here but {record[key]} in alphas.jsonl")
        rows.append(row)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if fixed:
        atomic_write_text(path, out.getvalue())
    return fixed


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {repair(Path(name))} rows re-aligned")
