"""``aca-zoo``: list, inspect, publish, verify and export model zoo entries
(see :mod:`aca_keras.zoo`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from aca_keras import zoo
from aca_keras.cli import run_cli
from aca_keras.cli.export import formats_help, zoo_export_path
from aca_keras.exporting.formats import get_format, list_formats
from aca_keras.io.run_dir import RunDir
from aca_keras.zoo._registry import describe_location, shadowed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aca-zoo",
        description="The aca_keras model zoo: derived DARTS/ACA architectures with their "
                    "metrics, provenance and (optionally) trained weights. Private zoos: "
                    "--zoo-dir or the ACA_ZOO_PATH environment variable.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--zoo-dir", action="append", default=None, metavar="DIR",
                        help="a private zoo directory searched first (repeatable); publish "
                             "writes into the first one")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", parents=[common], help="list the entries")
    p.add_argument("--dataset", default=None, help="only entries for this data set")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--with-weights", dest="has_weights", action="store_const",
                         const=True, default=None, help="only entries with trained weights")
    weights.add_argument("--without-weights", dest="has_weights", action="store_const",
                         const=False, help="only architecture-only entries")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("info", parents=[common], help="show one entry")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print the whole entry.json")

    p = sub.add_parser("publish", parents=[common],
                       help="publish a search run directory as a zoo entry")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help=f"search run directory (with {RunDir.TRAINED_MODEL} after aca-train for "
                        "weights)")
    p.add_argument("--name", required=True, help="entry name, e.g. my-aca-cifar10")
    p.add_argument("--version", default="1.0.0", help="entry version")
    p.add_argument("--title", default=None, help="one-line title of the model card")
    p.add_argument("--summary", default=None, help="a paragraph for the model card")
    p.add_argument("--license", default="Apache-2.0", help="SPDX license identifier")
    p.add_argument("--export", action="append", default=[], choices=list_formats(),
                   help="also export and verify this format as an artifact (repeatable; a "
                        "directory format is stored as a zip archive). " + formats_help())
    p.add_argument("--note", action="append", default=[], help="a remark for the card")
    p.add_argument("--overwrite", action="store_true", help="replace an existing entry")
    p.add_argument("--allow-shadow", dest="shadow", action="store_true",
                   help="allow a name the bundled zoo already has (the private entry then "
                        "hides the bundled one wherever this zoo is searched first)")

    p = sub.add_parser("verify", parents=[common],
                       help="check entries (schema, card, checksums, build, exported "
                            "artifacts run against Keras; with --evaluate, re-measure the "
                            "metric)")
    p.add_argument("name", nargs="?", default="all", help="an entry name (default: all)")
    p.add_argument("--no-build", action="store_true",
                   help="skip building/loading models (fast: documents and checksums only)")
    p.add_argument("--evaluate", metavar="DATA", default=None,
                   help="also measure the entry's accuracy on DATA (a data set name or the "
                        "path of the file/folder the entry's metric was measured on; the "
                        "entry's recorded split is rebuilt from it) and fail when it is "
                        "outside the claim's 3-sigma interval for the split's size")
    p.add_argument("--data-dir", default=None, help="TFDS data directory for --evaluate")

    p = sub.add_parser("export", parents=[common],
                       help="export an entry's model (aca_keras.exporting.export)")
    p.add_argument("name")
    p.add_argument("--format", default="onnx", choices=list_formats(),
                   help="export format (default: onnx). " + formats_help())
    p.add_argument("--output", default=None,
                   help="output path (default: " + ", ".join(
                       f"NAME{get_format(name).suffix}" for name in list_formats())
                   + " in the current directory)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aca-zoo``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"list": _list, "info": _info, "publish": _publish, "verify": _verify,
                "export": _export}
    return run_cli(lambda: commands[args.command](args), prog="aca-zoo", parser=parser)


def _zoo_dirs(args):
    return args.zoo_dir or None


def _list(args) -> int:
    entries = zoo.list(dataset=args.dataset, has_weights=args.has_weights,
                       zoo_dir=_zoo_dirs(args))
    if args.json:
        print(json.dumps([_summary(e) for e in entries], indent=2))
        return 0
    if not entries:
        print("no entries")
        return 0
    rows = [("NAME", "VERSION", "DATASET", "WEIGHTS", "PARAMS", "METRIC", "WHERE")]
    for e in entries:
        m = next((m for m in e.metrics if m.name != "params"), None)
        shown = f"{m.name} {m.formatted()} ({m.how})" if m is not None else "-"
        rows.append((e.name, e.version, e.dataset, "yes" if e.has_weights else "no",
                     f"{e.params['inference_trainable'] / 1e6:.2f}M", shown,
                     _where(e, args)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _where(e, args) -> str:
    """Which zoo an entry comes from, and which entries of the same name it hides."""
    hidden = shadowed(e.name, _zoo_dirs(args))
    where = describe_location(e)
    if hidden:
        where += " (hides " + ", ".join("bundled" if loc.bundled else str(loc.path)
                                        for loc in hidden) + ")"
    return where


def _summary(e) -> dict:
    return {"name": e.name, "version": e.version, "title": e.title, "dataset": e.dataset,
            "has_weights": e.has_weights, "params": e.params,
            "metrics": [m.to_dict() for m in e.metrics], "path": str(e.path),
            "bundled": e.bundled, "zoo": "bundled" if e.bundled else str(e.zoo_dir)}


def _info(args) -> int:
    e = zoo.info(args.name, zoo_dir=_zoo_dirs(args))
    if args.json:
        print(json.dumps(e.document, indent=2))
        return 0
    print(f"{e.name} {e.version}: {e.title}")
    print(f"  zoo: {_where(e, args)}")
    print(f"  {e.summary}")
    print(f"  data: {e.dataset}, input {'x'.join(map(str, e.input_shape))}, "
          f"{e.num_classes} classes")
    macro = ", ".join(f"{k}={v}" for k, v in e.macro.items())
    print(f"  macro: {macro}")
    print(f"  params: {e.params['inference_trainable']:,} trainable (inference), "
          f"{e.params['total']:,} total")
    for m in e.metrics:
        print(f"  metric {m.name}: {m.formatted()} on {m.split} [{m.how_label}; {m.source}]")
    for a in e.artifacts:
        print(f"  artifact {a.path} ({a.kind}, {a.bytes:,} bytes, sha256 {a.sha256})")
    if not e.artifacts:
        print("  no artifacts: architecture only (zoo.load builds fresh weights)")
    print(f"  license: {e.license}")
    print(f"  citation: {e.document['citation']['text']}")
    print(f"  folder: {e.path}")
    return 0


def _publish(args) -> int:
    zoo_dirs = _zoo_dirs(args)
    if not zoo_dirs:
        raise ValueError("publish needs --zoo-dir DIR, the zoo directory to write into.")
    entry = zoo.publish(args.run_dir, args.name, zoo_dir=zoo_dirs[0], version=args.version,
                        title=args.title, summary=args.summary, license=args.license,
                        exports=args.export, notes=args.note, overwrite=args.overwrite,
                        shadow=args.shadow)
    print(f"published {entry.name} {entry.version} -> {entry.path}")
    return 0


def _verify(args) -> int:
    report = zoo.verify(args.name, zoo_dir=_zoo_dirs(args), build=not args.no_build,
                        evaluate=args.evaluate, data_dir=args.data_dir)
    print(report.format())
    return 0 if report.ok else 1


def _export(args) -> int:
    # imported after run_cli's quiet_startup(): exporting imports TensorFlow, whose start-up
    # lines are silenced only then
    from aca_keras.exporting import export

    entry = zoo.info(args.name, zoo_dir=_zoo_dirs(args))
    model = zoo.load(args.name, zoo_dir=_zoo_dirs(args))
    output = zoo_export_path(entry.name, args.format, args.output)
    result = export(model, output, format=args.format, class_names=list(entry.class_names),
                    overwrite=args.overwrite)
    verified = (f"verified, max |difference| {result.max_abs_diff:.2g}"
                if result.verified and result.max_abs_diff is not None else "not verified")
    print(f"exported {entry.name} -> {result.path} ({result.format}, {verified})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
