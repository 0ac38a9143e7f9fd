"""Thin command line: parse arguments, call one function per verb, map user errors to exit 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

import marinelife as ml
from marinelife import __version__
from marinelife.config import TrainConfig
from marinelife.errors import MarineLifeError
from marinelife.logutil import setup_logging

log = logging.getLogger("marinelife")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="two-stage-lite", help="recipe name or YAML file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set epochs=1",
    )
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="parent of run folders")
    p.add_argument("--name", default=None, help="run folder name (default: recipe + timestamp)")
    p.add_argument("--weights", type=Path, default=None, help="backbone weights file")
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation")
    p.add_argument("--no-feature-cache", action="store_true", help="recompute frozen features")
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "mps"),
        default=None,
        help="where to train (default: the recipe's, auto); under torchrun each rank on its GPU",
    )
    p.add_argument(
        "--amp",
        choices=("none", "bf16", "fp16"),
        default=None,
        help="mixed precision (fp16: CUDA only, loss-scaled); bf16 also on CPU",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marinelife", description=__doc__)
    parser.add_argument("--version", action="version", version=f"marinelife {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="decode every image; report bad files, imbalance, leakage")
    p.add_argument("data", type=Path)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--min-size", type=int, default=32, help="smallest acceptable side in pixels")
    _add_common(p)

    p = sub.add_parser("split", help="stratified, duplicate-aware train/val/test split")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--val", type=float, default=0.15)
    p.add_argument("--test", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=42)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--copy", dest="mode", action="store_const", const="copy")
    mode.add_argument("--link", dest="mode", action="store_const", const="link")
    p.set_defaults(mode="copy")
    _add_common(p)

    p = sub.add_parser("download", help="fetch the Kaggle Sea Animals dataset and split it")
    p.add_argument("--dest", type=Path, default=Path("data/sea-animals"))
    p.add_argument("--seed", type=int, default=42)
    _add_common(p)

    p = sub.add_parser("inspect", help="class distribution, samples and size plots as PNGs")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: DATA-inspect)")
    p.add_argument("--augmented", action="store_true", help="also save augmented samples")
    p.add_argument("--recipe", default="two-stage", help="recipe whose augmentation to show")
    _add_common(p)

    p = sub.add_parser("train", help="train a recipe and evaluate it on the test split")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--resume", action="store_true", help="continue runs/NAME from last.ckpt")
    _add_train_options(p)
    _add_common(p)

    p = sub.add_parser("evaluate", help="evaluate a run folder on a split")
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument(
        "--tta",
        choices=("none", "flip", "five-crop"),
        default="none",
        help="also report test-time augmentation beside the plain result",
    )
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    _add_common(p)

    p = sub.add_parser("report", help="report.html and figures/ for a run folder")
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, default=None, help="dataset: adds the dataset section")
    p.add_argument("--embed", action="store_true", help="embed the PNGs (one file to send)")
    p.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM galleries")
    _add_common(p)

    p = sub.add_parser("compare", help="compare runs: bootstrap CIs, McNemar tests, chart")
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--out", type=Path, default=None, help="write Markdown, HTML, JSON and PNG")
    p.add_argument("--no-speed", action="store_true", help="skip the inference-speed check")
    _add_common(p)

    p = sub.add_parser("cv", help="k-fold cross-validation over train+val, duplicate-aware")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--inner-val", type=float, default=0.15, help="early-stopping share; 0: fold")
    _add_train_options(p)
    _add_common(p)

    p = sub.add_parser("explain", help="Grad-CAM heatmap: where the model looked in one photo")
    p.add_argument("model", type=Path, help="run folder or bundle")
    p.add_argument("image", type=Path)
    p.add_argument("--out", type=Path, default=None, help="PNG (default: IMAGE-gradcam.png here)")
    p.add_argument("--target", default=None, help="class to explain (default: the prediction)")
    _add_common(p)

    p = sub.add_parser("audit", help="suspected label errors and cross-class duplicates (CSV)")
    p.add_argument("run", type=Path, help="cv folder (audits train+val) or run folder")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="folder (default: RUN/audit)")
    _add_common(p)

    p = sub.add_parser("demo", help="train two-stage-lite briefly on synthetic (or your) data")
    p.add_argument("--data", type=Path, default=None, help="your dataset instead of synthetic")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    _add_common(p)

    p = sub.add_parser("recipes", help="list recipes, or show one resolved")
    p.add_argument("name", nargs="?")
    p.add_argument("--keys", action="store_true", help="list every config key")
    _add_common(p)

    p = sub.add_parser("predict", help="classify image files, folders or globs with a model")
    p.add_argument("model", type=Path, help="run folder, bundle, or exported .onnx")
    p.add_argument("images", nargs="+", help="image files, folders (recursive) or globs")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--format", dest="fmt", choices=("table", "csv", "json"), default="table")
    p.add_argument("--tta", choices=("flip",), default=None, help="average with the mirror image")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto")
    p.add_argument("--no-reject", action="store_true", help="never answer 'unknown'")
    _add_common(p)

    p = sub.add_parser("export", help="export a model to ONNX (verified; optional int8)")
    p.add_argument("model", type=Path, help="run folder or bundle")
    p.add_argument("--format", dest="fmt", choices=("onnx",), default="onnx")
    p.add_argument("--out", type=Path, default=None, help="folder (default: MODEL/export)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--quantize", choices=("int8",), default=None)
    p.add_argument("--data", type=Path, default=None, help="dataset for checks and int8")
    p.add_argument("--split", default="test", help="split whose accuracy int8 must keep")
    p.add_argument("--max-drop", type=float, default=1.0, help="int8 top-1 loss allowed, points")
    _add_common(p)

    p = sub.add_parser("serve", help="HTTP API and upload page (FastAPI + uvicorn)")
    p.add_argument("model", type=Path, help="run folder, bundle, or exported .onnx")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx")
    p.add_argument("--api-key", default=None, help="require header X-API-Key (or env)")
    p.add_argument("--max-upload-mb", type=float, default=10.0)
    p.add_argument("--max-files", type=int, default=16)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--workers", type=int, default=1,
                   help="forward passes at once (2: more images/s, longer tail)")  # fmt: skip
    p.add_argument("--threads", type=int, default=0,
                   help="threads per forward pass (0: automatic)")  # fmt: skip
    p.add_argument("--no-reject", action="store_true", help="never answer 'unknown'")
    _add_common(p)
    return parser


def config_from_flags(args: argparse.Namespace) -> TrainConfig:
    """The recipe with the command line's flags and ``--set`` overrides applied."""
    from marinelife.config import resolve_config

    extra: dict[str, Any] = {}
    if args.no_pretrained:
        extra["pretrained"] = False
    if args.weights is not None:
        extra["weights"] = str(args.weights)
    if args.no_feature_cache:
        extra["feature_cache"] = False
    if getattr(args, "device", None):
        extra["device"] = args.device
    if getattr(args, "amp", None):
        # --amp is the general key; it also switches off the older `bf16: true` of a recipe.
        extra.update({"amp": args.amp, "bf16": args.amp == "bf16"})
    if getattr(args, "compile", False):
        extra["compile"] = True
    return resolve_config(args.recipe, args.overrides, extra)


def _train(args: argparse.Namespace) -> None:
    if not args.resume:
        ml.train(args.data, name=args.name, project=args.runs_dir, config=config_from_flags(args))
        return
    # Only --device may change on resume; the rest is named as ignored.
    ignored = [f"--{k}" for k in ("amp", "compile") if getattr(args, k, None)]
    ignored += ["--set"] if args.overrides else []
    overrides = {"device": args.device} if args.device else {}
    overrides.update(dict.fromkeys(ignored))
    ml.train(args.data, name=args.name, project=args.runs_dir, resume=True, **overrides)


def _show_recipes(name: str | None, keys: bool) -> None:
    if keys:
        from marinelife.config import valid_keys

        print("\n".join(valid_keys()))
    elif name is None:
        for recipe, about in ml.recipes().items():
            print(f"{recipe:16s} {about['architecture']:24s} {about['description']}")
    else:
        print(yaml.safe_dump(ml.recipe(name).to_dict(), sort_keys=False, allow_unicode=True))


def _run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "check":
        report = ml.check(args.data, min_size=args.min_size)
        print(report.to_json() if args.json else report)
        return 0 if report.ok else 1
    if cmd == "split":
        ml.split(args.src, args.dst, val=args.val, test=args.test, seed=args.seed, mode=args.mode)
    elif cmd == "download":
        ml.download(args.dest, seed=args.seed)
    elif cmd == "inspect":
        ml.inspect(args.data, out=args.out, augmented=args.augmented, recipe=args.recipe)
    elif cmd == "train":
        _train(args)
    elif cmd == "evaluate":
        ml.Run(args.run).evaluate(args.data, split=args.split, tta=args.tta,
                                  report=not args.no_report)  # fmt: skip
    elif cmd == "report":
        if args.data is not None and not Path(args.data).exists():
            raise MarineLifeError("does not exist", path=args.data, fix="pass the dataset folder")
        page = ml.Run(args.run).report(args.data, embed=args.embed, gradcam=not args.no_gradcam)
        print(f"report: {page}")
    elif cmd == "compare":
        ml.compare(args.runs, out=args.out, speed=not args.no_speed)
    elif cmd == "explain":
        ml.explain(args.model, args.image, out=args.out, target=args.target)
    elif cmd == "audit":
        ml.audit(args.run, args.data, out=args.out)
    elif cmd == "cv":
        ml.cv(args.data, folds=args.folds, name=args.name, project=args.runs_dir,
              inner_val=args.inner_val, config=config_from_flags(args))  # fmt: skip
    elif cmd == "demo":
        ml.demo(args.data, project=args.runs_dir)
    elif cmd == "recipes":
        _show_recipes(args.name, args.keys)
    elif cmd == "predict":
        from marinelife.infer.predict_cli import write_predictions

        model = ml.load(args.model, backend=args.backend, reject=not args.no_reject, tta=args.tta)
        return write_predictions(model.predictor, args.images, top_k=args.top_k, fmt=args.fmt,
                                 batch_size=args.batch_size)  # fmt: skip
    elif cmd == "export":
        report = ml.export(
            args.model, args.fmt, out=args.out, opset=args.opset, int8=args.quantize == "int8",
            dynamic_batch=args.dynamic_batch, data=args.data, split=args.split,
            max_drop=args.max_drop,
        )  # fmt: skip
        print(report.summary())
    elif cmd == "serve":
        from marinelife.infer.server import ServeSettings

        limits = ServeSettings(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                               max_files=args.max_files, top_k=args.top_k)  # fmt: skip
        return ml.serve(
            args.model, host=args.host, port=args.port, backend=args.backend,
            api_key=args.api_key, reject=not args.no_reject, threads=args.threads,
            workers=args.workers, settings=limits,
        )  # fmt: skip
    else:
        raise AssertionError(cmd)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbose=args.verbose, quiet=args.quiet)
    try:
        return _run(args)
    except MarineLifeError as exc:
        if args.debug:
            raise
        # Under torchrun every rank may hit the same error; the rank tag tells the copies apart.
        rank = os.environ.get("RANK", "0") if "LOCAL_RANK" in os.environ else "0"
        where = "" if rank == "0" else f"[rank {rank}] "
        print(f"{where}marinelife {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"marinelife {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
