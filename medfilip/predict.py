"""``medfilip predict`` (zero-shot classes of image files) and ``medfilip export`` (a run folder as
a self-contained model folder).

    medfilip predict chest.png scan.dcm --model results/models/medfilip
                     [--classes cardiomegaly "pleural effusion" normal]
                     [--format table|json] [--top K] [--device cpu|cuda|auto]
    medfilip export results/models/medfilip exported/medfilip [--knowledge resources/knowledge/dictionary.yaml]

Files are PNG, JPEG or DICOM, decoded and letterboxed as the pipeline's image stores are. A file
the decoder refuses is one line on stderr, ``medfilip predict: <path>: <reason>``, and the others
are still classified and printed (the JSON lists the refusals under ``"errors"``). Exit status: 0
all answered, 1 some file refused, 2 no answer at all (model, classes or device unusable).
``python -m medfilip.predict`` runs the same two commands without the pipeline's CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from medfilip.names import Device


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG or DICOM files")
    p.add_argument(
        "--model",
        "-m",
        required=True,
        type=Path,
        help="a run folder (results/models/<run>) or a model folder written by `medfilip export`",
    )
    p.add_argument(
        "--classes",
        nargs="+",
        default=None,
        metavar="CLASS",
        help="category names or synonyms, optionally with a severity ('severe cardiomegaly'); "
        "default: the model's default classes (the pipeline's evaluation classes)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.add_argument("--top", type=int, default=None, metavar="K", help="show only the K best classes per image")
    p.add_argument(
        "--knowledge",
        type=Path,
        default=None,
        help="knowledge dictionary YAML for the class texts (default: the model folder's, or "
        "resources/knowledge/dictionary.yaml of the run's project)",
    )
    p.add_argument("--device", choices=[d.value for d in Device], default=Device.cpu.value, help="(default: cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a trained run folder (results/models/<run>)")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the model folder to write (replaced if it exists)")
    p.add_argument(
        "--knowledge",
        type=Path,
        default=None,
        help="knowledge dictionary YAML copied into the folder for class texts (default: "
        "resources/knowledge/dictionary.yaml of the run's project)",
    )
    p.add_argument(
        "--classes",
        nargs="+",
        default=None,
        metavar="CLASS",
        help="default classes of the exported model (default: the pipeline's evaluation classes)",
    )


def format_table(records: list[dict[str, Any]]) -> str:
    lines = []
    for record in records:
        lines.append(str(record["image"]))
        width = max(len(p["class"]) for p in record["predictions"])
        lines.append(f"  {'class':<{width}}  probability  cosine")
        for p in record["predictions"]:
            lines.append(f"  {p['class']:<{width}}  {p['probability']:11.4f}  {p['cosine']:+.4f}")
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from medfilip.inference import UnknownClassError, zero_shot
    from medfilip.pretrained import load
    from medfilip.training.model import ModelError

    if getattr(args, "threads", 0):  # the medfilip CLI's common --threads
        torch.set_num_threads(args.threads)
    try:
        model, preprocess = load(args.model, args.device, knowledge=args.knowledge)
    except (ModelError, ValueError, OSError, RuntimeError) as err:  # RuntimeError: --device cuda without a GPU
        print(f"medfilip predict: {err}", file=sys.stderr)
        return 2
    try:  # classes are checked before any file is decoded; each refused file is an error record
        result = zero_shot(
            model, [str(p) for p in args.images], args.classes, batch_size=args.batch_size, preprocess=preprocess
        )
    except (UnknownClassError, ValueError) as err:
        print(f"medfilip predict: {err}", file=sys.stderr)
        return 2
    records = result.to_records()
    if args.top is not None:
        records = [{**r, "predictions": r["predictions"][: max(1, args.top)]} for r in records]
    if args.format == "json":
        document = {
            "model": str(args.model),
            "classes": result.classes,
            "texts": result.texts,
            "logit_scale": result.logit_scale,
            "images": records,
            "errors": [e.to_record() for e in result.errors],
        }
        print(json.dumps(document, indent=2), flush=True)
    elif records:
        print(format_table(records), flush=True)
    for error in result.errors:
        print(f"medfilip predict: {error}", file=sys.stderr)
    return 1 if result.errors else 0


def run_export(args: argparse.Namespace) -> int:
    from medfilip.inference import UnknownClassError
    from medfilip.pretrained import is_pretrained_folder, load_run, save_pretrained
    from medfilip.training.model import ModelError

    try:
        if is_pretrained_folder(args.run_dir):
            raise ModelError(f"{args.run_dir}: already a model folder (export reads a run folder with model.pt)")
        model = load_run(args.run_dir, knowledge=args.knowledge)
        if model.knowledge is None:
            raise ModelError(f"{args.run_dir}: no knowledge dictionary found; name one with --knowledge")
        out = save_pretrained(model, args.out_dir, default_classes=args.classes)
    except (ModelError, UnknownClassError, ValueError, OSError) as err:
        print(f"medfilip export: {err}", file=sys.stderr)
        return 2
    print(f"{args.run_dir} -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medfilip.predict", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_predict_arguments(sub.add_parser("predict", help="zero-shot classes of image files"))
    add_export_arguments(sub.add_parser("export", help="a run folder as a self-contained model folder"))
    args = parser.parse_args(argv)
    return run_predict(args) if args.command == "predict" else run_export(args)


if __name__ == "__main__":
    sys.exit(main())
