"""Every verb's arguments: the argparse parser of `marinelife` (help texts in :mod:`.help`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from marinelife._version import __version__
from marinelife.cli.help import DESCRIPTION, EPILOG, HelpFormatter
from marinelife.cli.help import add_verb as _verb


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="two-stage-lite",
                   help="recipe name (`marinelife recipes` lists them) or a YAML file")  # fmt: skip
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set epochs=1; `marinelife recipes "
        "--keys` lists the keys (default: none)",
    )
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="parent of run folders")
    p.add_argument("--name", default=None, help="run folder name (default: recipe + timestamp)")
    p.add_argument("--weights", type=Path, default=None,
                   help="backbone weights file, for offline use (default: ImageNet weights "
                   "through timm, or the -lite recipes' packaged ones)")  # fmt: skip
    p.add_argument("--no-pretrained", action="store_true",
                   help="random initialisation instead of ImageNet weights")  # fmt: skip
    p.add_argument("--no-feature-cache", action="store_true",
                   help="recompute the frozen backbone's features every epoch instead of "
                   "caching them once")  # fmt: skip
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
        help="mixed precision: bf16 on CUDA and CPU, fp16 on CUDA only (loss-scaled) "
        "(default: the recipe's, none)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marinelife", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("--version", action="version", version=f"marinelife {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _verb(sub, "check", "decode every image; report bad files, imbalance, leakage",
              "marinelife check PHOTOS", "marinelife check DATA --json > check.json",
              about="Exits 1 when it finds a problem (0 when clean), so it can gate a script. "
              "Nothing is modified.")  # fmt: skip
    p.add_argument("data", type=Path, help="a flat PHOTOS/CLASS/ or a split DATA/{train,val,test}/")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--min-size", type=int, default=32, help="smallest acceptable side in pixels")
    _add_common(p)

    p = _verb(sub, "split", "stratified, duplicate-aware train/val/test split",
              "marinelife split PHOTOS DATA", "marinelife split PHOTOS DATA --val 0.1 --test 0.2 "
              "--link", "marinelife split PHOTOS DATA --groups level:1      # PHOTOS/CLASS/SITE/",
              "marinelife split PHOTOS DATA --groups sites.csv --seed 7",
              about="PHOTOS/CLASS/*.jpg -> DATA/{train,val,test}/CLASS/; exact and near "
              "duplicates stay inside one split. With --groups every site, dive or day does too "
              "(will the model work at the next site?). PHOTOS is never changed.")  # fmt: skip
    p.add_argument("src", type=Path, help="the photos: SRC/CLASS/*.jpg (read only)")
    p.add_argument("dst", type=Path, help="new dataset folder (must not exist or be empty)")
    p.add_argument("--val", type=float, default=0.15, help="share of each class for validation")
    p.add_argument("--test", type=float, default=0.15, help="share of each class for the test")
    p.add_argument("--seed", type=int, default=42, help="random seed of the assignment")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--copy", dest="mode", action="store_const", const="copy",
                      help="copy the photos into DST (the default)")  # fmt: skip
    mode.add_argument("--link", dest="mode", action="store_const", const="link",
                      help="hard links instead of copies: no extra space, but editing a file "
                      "in DST in place also edits it in SRC (default: copy)")  # fmt: skip
    p.set_defaults(mode="copy")
    # SOURCE syntax, shared by split --groups, cv --groups and evaluate --by-group.
    group_source = (
        "SOURCE: FILE.csv (header file,group; files relative to {where}; every photo needs a "
        "line), regex:PATTERN (searched in the relative path; first capture group, else the "
        "whole match), level:N (folder N below the class folder: level:1 is SITE in "
        "CLASS/SITE/photo.jpg, level:-1 the photo's own folder) or exif-date (the capture day; "
        "photos without one form one 'no date' group)"
    )
    p.add_argument(
        "--groups",
        metavar="SOURCE",
        default=None,
        help="keep every group (site, dive, camera, day) inside one split, duplicates joined; "
        + group_source.format(where="SRC")
        + ". Writes DST/groups.csv; DST/split_report.json has each split's class mix",
    )
    _add_common(p)

    p = _verb(sub, "download", "fetch the Kaggle Sea Animals dataset and split it",
              "marinelife download --dest data/sea-animals",
              about="Needs Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME and "
              "KAGGLE_KEY).")  # fmt: skip
    p.add_argument("--dest", type=Path, default=Path("data/sea-animals"),
                   help="where the split dataset goes")  # fmt: skip
    p.add_argument("--seed", type=int, default=42, help="random seed of the split")
    _add_common(p)

    p = _verb(sub, "inspect", "class distribution, samples and size plots as PNGs",
              "marinelife inspect DATA",
              "marinelife inspect DATA --augmented --out figs/")  # fmt: skip
    p.add_argument("data", type=Path, help="a dataset folder (only read)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder, never inside DATA "
                   "(default: ./inspect/DATA-NAME)")  # fmt: skip
    p.add_argument("--augmented", action="store_true", help="also save augmented samples")
    p.add_argument("--recipe", default="two-stage-lite", help="recipe whose augmentation to show")
    _add_common(p)

    p = _verb(sub, "train", "train a recipe and evaluate it on the test split",
              "marinelife train --data DATA --name lite0",
              "marinelife train --data DATA --recipe baseline --set epochs=5 --set batch_size=16",
              "marinelife train --data DATA --name lite0 --resume",
              about="Writes runs/NAME/: config.yaml, metrics.csv, best.safetensors + model.json "
              "(the model), last.ckpt (resumable), test_metrics.json and report.html.")  # fmt: skip
    p.add_argument("--data", type=Path, required=True, help="dataset: DATA/{train,val,test}/CLASS/")
    p.add_argument("--resume", action="store_true", help="continue runs/NAME from last.ckpt")
    _add_train_options(p)
    _add_common(p)

    p = _verb(sub, "evaluate", "evaluate a run folder on a split",
              "marinelife evaluate runs/lite0 --data DATA --tta flip",
              "marinelife evaluate runs/lite0 --data OTHER-REEF",
              "marinelife evaluate runs/lite0 --data DATA --by-group DATA/groups.csv",
              about="On the run's training data the result is RUN/<split>_metrics.json; on any "
              "other dataset it goes to RUN/evals/<dataset>-<split>.json (the run's own result "
              "is kept) and gets its own report section.")  # fmt: skip
    p.add_argument("run", type=Path, help="run folder from `marinelife train`")
    p.add_argument("--data", type=Path, required=True,
                   help="dataset with the model's classes (or a subset of them)")  # fmt: skip
    p.add_argument("--split", default="test", help="which split of DATA: train, val or test")
    p.add_argument(
        "--tta",
        choices=("none", "flip", "five-crop"),
        default="none",
        help="also report test-time augmentation beside the plain result",
    )
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument(
        "--by-group",
        metavar="SOURCE",
        default=None,
        help="accuracy and macro-F1 per site/group with 95%% intervals, worst groups named "
        "(also in the metrics JSON and the report); DATA/groups.csv from split --groups works "
        "as is; " + group_source.format(where="DATA"),
    )
    _add_common(p)

    p = _verb(sub, "report", "report.html and figures/ for a run folder",
              "marinelife report runs/lite0", "marinelife report runs/lite0 --embed")  # fmt: skip
    p.add_argument("run", type=Path, help="run folder from `marinelife train`")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset for the dataset section (default: the run's training data, "
                   "when it is still there)")  # fmt: skip
    p.add_argument("--embed", action="store_true", help="embed the PNGs (one file to send)")
    p.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM galleries")
    _add_common(p)

    p = _verb(sub, "compare", "compare runs: bootstrap CIs, McNemar tests, chart",
              "marinelife compare runs/baseline-lite runs/two-stage-lite --out cmp/")  # fmt: skip
    p.add_argument("runs", type=Path, nargs="+", help="run folders evaluated on the same photos")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for Markdown, HTML, JSON and PNG (default: the table on "
                   "stdout only)")  # fmt: skip
    p.add_argument("--no-speed", action="store_true", help="skip the inference-speed check")
    _add_common(p)

    p = _verb(sub, "cv", "k-fold cross-validation over train+val, duplicate-aware",
              "marinelife cv --data DATA --folds 5 --recipe two-stage-lite --name cv5",
              "marinelife cv --data DATA --folds 5 --groups DATA/groups.csv")  # fmt: skip
    p.add_argument("--data", type=Path, required=True, help="dataset: DATA/{train,val,test}/CLASS/")
    p.add_argument("--folds", type=int, default=5, help="number of folds (one run each)")
    p.add_argument("--inner-val", type=float, default=0.15,
                   help="share of each fold's training part held out for early stopping; 0: "
                   "stop on the fold itself")  # fmt: skip
    p.add_argument(
        "--groups",
        metavar="SOURCE",
        default=None,
        help="keep every group (site, dive, camera, day) inside one fold, duplicates joined; "
        "DATA/groups.csv from split --groups works as is; " + group_source.format(where="DATA"),
    )
    _add_train_options(p)
    _add_common(p)

    p = _verb(sub, "explain", "Grad-CAM heatmap: where the model looked in one photo",
              "marinelife explain runs/lite0 photo.jpg",
              "marinelife explain runs/lite0 photo.jpg --target Seahorse")  # fmt: skip
    p.add_argument("model", type=Path, help="run folder or bundle")
    p.add_argument("image", type=Path, help="the photo")
    p.add_argument("--out", type=Path, default=None, help="PNG (default: IMAGE-gradcam.png here)")
    p.add_argument("--target", default=None, help="class to explain (default: the prediction)")
    _add_common(p)

    p = _verb(sub, "audit", "suspected label errors and cross-class duplicates (CSV)",
              "marinelife audit runs/cv5 --data DATA")  # fmt: skip
    p.add_argument("run", type=Path, help="cv folder (audits train+val) or run folder")
    p.add_argument("--data", type=Path, required=True, help="the dataset the run was trained on")
    p.add_argument("--out", type=Path, default=None, help="folder (default: RUN/audit)")
    _add_common(p)

    p = _verb(sub, "demo", "train two-stage-lite briefly on synthetic (or your) data",
              "marinelife demo", "marinelife demo --data DATA")  # fmt: skip
    p.add_argument("--data", type=Path, default=None, help="your dataset instead of synthetic")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="parent of the run folder")
    _add_common(p)

    p = _verb(sub, "recipes", "list recipes, or show one resolved",
              "marinelife recipes", "marinelife recipes two-stage-lite",
              "marinelife recipes --keys")  # fmt: skip
    p.add_argument("name", nargs="?", help="a recipe to show in full, as YAML (default: list all)")
    p.add_argument("--keys", action="store_true", help="list every config key for --set")
    _add_common(p)

    p = _verb(sub, "predict", "classify photos and videos (files, folders, globs)",
              "marinelife predict runs/lite0 dive.jpg ~/dives/ --top-k 3",
              "marinelife predict runs/lite0 ~/dives --format csv > predictions.csv",
              "marinelife predict runs/lite0 dive.mp4 --every 2",
              "marinelife predict runs/lite0 survey/ --format dwc --out records/")  # fmt: skip
    p.add_argument("model", type=Path, help="run folder, bundle, or exported .onnx")
    p.add_argument("images", nargs="+",
                   help="photos or videos (.mp4 .mov .avi .mkv .m4v): files, folders "
                   "(recursive) or globs")  # fmt: skip
    p.add_argument("--top-k", type=int, default=3, help="classes per row (default: 3)")
    p.add_argument("--format", dest="fmt", choices=("table", "csv", "json", "dwc"),
                   default="table",
                   help="table, csv or json (stdout, or files in --out), or dwc: a Darwin Core "
                   "archive in --out (default: table)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None,
                   help="folder for predictions.csv/.json, the video page and the dwc archive "
                   "(default: results on stdout; a video page in ./VIDEO-predict/)")  # fmt: skip
    sampling = p.add_mutually_exclusive_group()
    sampling.add_argument("--every", type=float, default=None, metavar="SECONDS",
                          help="videos: classify one frame every SECONDS "
                          "(default: 1.0)")  # fmt: skip
    sampling.add_argument("--fps", type=float, default=None,
                          help="videos: classify this many frames per second instead of "
                          "--every (default: off)")  # fmt: skip
    p.add_argument("--taxonomy", type=Path, default=None,
                   help="dwc: CSV class,scientificName,taxonRank[,scientificNameID] "
                   "(default: the shipped 23-class Sea Animals map)")  # fmt: skip
    p.add_argument("--include-unknown", action="store_true",
                   help="dwc: keep 'unknown' predictions, marked unverified "
                   "(default: left out)")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue the results in --out, skipping inputs already there "
                   "(default: off)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace earlier results in --out "
                   "(default: refuse a folder that holds files)")  # fmt: skip
    p.add_argument("--workers", type=int, default=0,
                   help="photo-decoding threads (default: 0 = up to 4, one per core)")  # fmt: skip
    p.add_argument("--tta", choices=("flip",), default=None,
                   help="average with the mirror image (default: off)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=16,
                   help="images per forward pass (default: 16)")  # fmt: skip
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="auto: ONNX Runtime for an .onnx model, else PyTorch "
                   "(default: auto)")  # fmt: skip
    p.add_argument("--no-reject", action="store_true",
                   help="never answer 'unknown' (default: answer it below the calibrated "
                   "threshold)")  # fmt: skip
    _add_common(p)

    p = _verb(sub, "export", "export a model to ONNX (verified; optional int8)",
              "marinelife export runs/lite0 --data DATA",
              "marinelife export runs/lite0 --quantize int8 --data DATA --max-drop 1",
              about="Checked against PyTorch on random and real photos before anything is "
              "written; int8 is refused when it loses more than --max-drop points.")  # fmt: skip
    p.add_argument("model", type=Path, help="run folder or bundle")
    p.add_argument("--format", dest="fmt", choices=("onnx",), default="onnx",
                   help="export format")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="folder (default: MODEL/export)")
    p.add_argument("--opset", type=int, default=17,
                   help="ONNX opset; lower it for an older runtime")  # fmt: skip
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="any batch size at run time "
                   "(--no-dynamic-batch: fixed batch 1)")  # fmt: skip
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8 static quantization calibrated on DATA's train split, into "
                   "MODEL/export-int8 (default: off, fp32)")  # fmt: skip
    p.add_argument("--data", type=Path, default=None, help="dataset for checks and int8")
    p.add_argument("--split", default="test", help="split whose accuracy int8 must keep")
    p.add_argument("--max-drop", type=float, default=1.0, help="int8 top-1 loss allowed, points")
    _add_common(p)

    p = _verb(sub, "serve", "HTTP API and upload page (FastAPI + uvicorn)",
              "marinelife serve runs/lite0", "marinelife serve runs/lite0 --port 9000",
              "MARINELIFE_API_KEY=change-me marinelife serve runs/lite0 --host 0.0.0.0",
              about="Open http://127.0.0.1:8000/ for the upload page; the API is documented at "
              "/docs.")  # fmt: skip
    p.add_argument("model", type=Path, help="run folder, bundle, or exported .onnx")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on: 127.0.0.1 is this machine only, 0.0.0.0 every "
                   "network interface (set an API key then)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx",
                   help="inference engine: ONNX Runtime (faster on CPU) or PyTorch")  # fmt: skip
    p.add_argument("--api-key", default=None,
                   help="require this key in header X-API-Key; better set the environment "
                   "variable MARINELIFE_API_KEY, which does not show in `ps` "
                   "(default: no key)")  # fmt: skip
    p.add_argument("--max-file-mb", type=float, default=25.0,
                   help="largest photo accepted; a bigger one is named in the results and the "
                   "others are still classified")  # fmt: skip
    p.add_argument("--max-upload-mb", type=float, default=100.0,
                   help="largest request, all its files together "
                   "(checked while it streams in)")  # fmt: skip
    p.add_argument("--max-files", type=int, default=16,
                   help="files classified per request; more are named in the results, not "
                   "classified")  # fmt: skip
    p.add_argument("--top-k", type=int, default=3,
                   help="labels per photo (a request can ask for others with ?top_k=)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1,
                   help="forward passes at once (2: more images/s, longer tail)")  # fmt: skip
    p.add_argument("--threads", type=int, default=0,
                   help="threads per forward pass; 0: the backend's default (one per physical "
                   "core, shared out between --workers)")  # fmt: skip
    p.add_argument("--no-reject", action="store_true", help="never answer 'unknown'")
    _add_common(p)
    return parser
