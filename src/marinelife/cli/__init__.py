"""The command line: each verb calls the public API (``import marinelife as ml``); a user error is
one line on stderr and exit code 2. Arguments are in :mod:`.parser`, help texts in :mod:`.help`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

import marinelife as ml
from marinelife.cli.help import recipe_lines
from marinelife.cli.parser import build_parser
from marinelife.config import TrainConfig
from marinelife.errors import MarineLifeError
from marinelife.logutil import setup_logging

log = logging.getLogger("marinelife")


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
        print("\n".join(recipe_lines(ml.recipes())))
    else:
        print(yaml.safe_dump(ml.recipe(name).to_dict(), sort_keys=False, allow_unicode=True))


def _run(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "check":
        report = ml.check(args.data, min_size=args.min_size)
        print(report.to_json() if args.json else report)
        return 0 if report.ok else 1
    if cmd == "split":
        ml.split(args.src, args.dst, val=args.val, test=args.test, seed=args.seed, mode=args.mode,
                 groups=args.groups)  # fmt: skip
    elif cmd == "download":
        ml.download(args.dest, seed=args.seed)
    elif cmd == "inspect":
        ml.inspect(args.data, out=args.out, augmented=args.augmented, recipe=args.recipe)
    elif cmd == "train":
        _train(args)
    elif cmd == "evaluate":
        ml.Run(args.run).evaluate(args.data, split=args.split, tta=args.tta,
                                  report=not args.no_report, by_group=args.by_group)  # fmt: skip
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
              inner_val=args.inner_val, config=config_from_flags(args),
              groups=args.groups)  # fmt: skip
    elif cmd == "demo":
        ml.demo(args.data, project=args.runs_dir)
    elif cmd == "recipes":
        _show_recipes(args.name, args.keys)
    elif cmd == "predict":
        model = ml.load(args.model, backend=args.backend, reject=not args.no_reject, tta=args.tta)
        return model.write_predictions(
            args.images, top_k=args.top_k, fmt=args.fmt,
            batch_size=args.batch_size, out_dir=args.out,
            every=args.every if args.every is not None else (None if args.fps else 1.0),
            fps=args.fps, taxonomy=args.taxonomy, include_unknown=args.include_unknown,
            resume=args.resume, overwrite=args.overwrite, workers=args.workers,
        )  # fmt: skip
    elif cmd == "export":
        report = ml.export(
            args.model, args.fmt, out=args.out, opset=args.opset, int8=args.quantize == "int8",
            dynamic_batch=args.dynamic_batch, data=args.data, split=args.split,
            max_drop=args.max_drop,
        )  # fmt: skip
        print(report.summary())
    elif cmd == "serve":
        return ml.serve(
            args.model, host=args.host, port=args.port, backend=args.backend,
            api_key=args.api_key, reject=not args.no_reject, threads=args.threads,
            workers=args.workers, max_upload_mb=args.max_upload_mb,
            max_file_mb=args.max_file_mb, max_files=args.max_files, top_k=args.top_k,
        )  # fmt: skip
    else:
        raise AssertionError(cmd)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a reader that left shows up here, not at exit
        return code
    except BrokenPipeError:
        # `marinelife recipes | head`: the reader closed the pipe. Point stdout at devnull so
        # the interpreter's final flush cannot raise again, and exit as a SIGPIPE'd tool does.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # no real file descriptor (captured)
            pass
        return 141


def _main(argv: list[str] | None) -> int:
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
