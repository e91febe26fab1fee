"""The ``switokd`` command: a thin layer over the library, one function pair per command (``cmd_X`` runs it,
``add_X`` declares its arguments):

    train, eval      train a cohort from a config (or resume one); evaluate a checkpoint
    sweep, race      every method on every seed of a config; the same as a race on validation (Optuna)
    cache            fill a frozen teacher's logit cache ahead of training
    report, status   figures and an HTML page from run directories; where runs stand
    export, bench    a trained network to ONNX/TorchScript/safetensors (int8 too); time exported models
    predict, list    classify image files; list models, methods, data sets, recipes

Every error is one line on stderr with its exit code (``EXIT_CODES``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import UsageError
from .version import __version__


class Parser(argparse.ArgumentParser):
    """argparse, but a wrong argument is one line on stderr (and exit code 2), not the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

EPILOG_TRAIN = """\
examples:
  switokd train --config configs/fashion_mnist.yaml
  switokd train --config configs/fashion_mnist.yaml train.epochs=1 method.name=dml
  switokd train --config configs/cifar100_wrn16_2_mbv2.yaml data.dir=~/data networks.student.lr=0.01
  switokd train --resume runs/NAME train.epochs=20

Overrides are key=value, applied after the YAML file; values are parsed as YAML
(3, 0.1, true, [100,150]). Networks are addressed by name or index:
networks.teacher.model=wrn16_4. An unknown key is an error that names it.
A run writes config.yaml, steps.jsonl, epochs.jsonl, last.pt, best.pt and report.json to
train.out_dir/train.run_name. last.pt is also written inside epochs (train.checkpoint_every_s, default 300);
SIGTERM or Ctrl-C finish the current step, write it and print the command that continues the run.
"""


def _report_lines(report: dict) -> list[str]:
    procs = report.get("processes", 1)
    lines = [f"{report['method']} on {report['dataset']}, {report['epochs']} epochs, "
             f"{report['train_time_s']:.0f}s of training ({report.get('wall_time_s', 0):.0f}s with evaluation), "
             f"{report.get('images_per_s', 0):.0f} img/s" + (f" over {procs} processes" if procs > 1 else "")]
    on_val = report.get("best_chosen_on") == "val"
    for n, r in report["networks"].items():
        last = "n/a" if r["last_acc"] is None else f"{r['last_acc']:.2f}%"
        best = "n/a" if r["best_acc"] is None else f"{r['best_acc']:.2f}% (epoch {r['best_epoch']})"
        if on_val and r.get("best_val_acc") is not None:
            best += f", val {r['best_val_acc']:.2f}%"
        lines.append(f"  {n:<10} {r['role']:<7} {r['model']:<18} last-epoch acc {last:>7}   best {best}")
    lines.append("  test accuracy; the best epoch (best.pt) " + ("is chosen on the validation split" if on_val else
                 "is the test-set maximum, so optimistic: set data.val_split to choose it on held-out images"))
    for p, v in report.get("expert_share", {}).items():
        lines.append(f"  expert-mode share {p}: {v:.1%} of steps")
    for t, v in report.get("paused_share", {}).items():
        lines.append(f"  teacher {t} paused (no backward, no step): {v:.1%} of steps")
    if report.get("run_dir"):
        lines.append(f"  run directory: {report['run_dir']}")
    return lines


def cmd_train(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .train.trainer import Trainer

    if args.resume:
        if args.config:
            raise ConfigError("--resume takes the config from the checkpoint; drop --config")
        trainer = Trainer.from_checkpoint(args.resume, args.overrides)
    elif not args.config:
        raise ConfigError("give --config FILE (see configs/, e.g. configs/fashion_mnist.yaml) or --resume CHECKPOINT")
    else:
        cfg = load_config(args.config, args.overrides)
        trainer = Trainer(cfg)
    report = trainer.fit()
    if trainer.dist.is_main:
        print("\n".join(_report_lines(report)))
    trainer.dist.close()
    return 0


def add_train(sub: Any) -> None:
    """``switokd train``'s arguments."""
    t = sub.add_parser("train", help="train a teacher and student(s) together",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_TRAIN,
                       description="Train the networks of a config with its method, evaluating and checkpointing each epoch.")
    t.add_argument("--config", help="YAML config file (see configs/)")
    t.add_argument("--resume", metavar="RUN", help="continue a run: its directory or a checkpoint (last.pt) in it")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied in order")
    t.set_defaults(fn=cmd_train)


def cmd_eval(args: argparse.Namespace) -> int:
    from .train.trainer import Trainer

    trainer = Trainer.from_checkpoint(args.checkpoint, args.overrides, evaluate_only=True)
    results = trainer.evaluate()
    if args.json:  # JSON alone on stdout, so that a parser can read it
        print(json.dumps(results))
        return 0
    print(f"{args.checkpoint}: epoch {trainer.epoch}, {trainer.data.name} test split ({len(trainer.data.test_y)} images)")
    for n, r in results.items():
        print(f"  {n:<10} {trainer.networks[n].cfg.model:<18} acc {r['acc']:.2f}%  loss {r['loss']:.4f}")
    return 0


def add_eval(sub: Any) -> None:
    """``switokd eval``'s arguments."""
    e = sub.add_parser("eval", help="evaluate every network of a checkpoint on the test split",
                       description="Evaluate every network stored in a checkpoint on its data set's test split.")
    e.add_argument("--checkpoint", required=True, help="a run's last.pt")
    e.add_argument("--json", action="store_true", help="also print the results as JSON")
    e.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.dir=PATH if the data moved")
    e.set_defaults(fn=cmd_eval)


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import sweep

    command = "switokd sweep " + " ".join(args.argv)
    reports = sweep(args.config, args.methods, args.seeds, args.out, args.overrides, command=command,
                    report=not args.no_report, log=lambda m: print(m, file=sys.stderr, flush=True),
                    workers=args.workers, storage=args.storage)
    if reports:
        print(f"{len(reports)} runs; results in {Path(args.out) / 'results.md'}")
        print((Path(args.out) / "results.md").read_text())
    # Exit 0 only when every asked run finished; a diverged or failed run is exit 3, as in `switokd train`.
    return 3 if reports.missing else 0


def add_sweep(sub: Any) -> None:
    """``switokd sweep``'s arguments."""
    sw = sub.add_parser("sweep", help="train a config with several methods and seeds; tabulate mean ± std",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Run every method on every seed with one config (each an ordinary run in "
                                    "OUT/<method>-seed<k>/), then write OUT/results.md (mean ± std over seeds), "
                                    "OUT/results.json and OUT/report/. Resumable: finished runs are skipped and an "
                                    "interrupted run continues from its checkpoint.",
                        epilog="example:\n  switokd sweep --config configs/fashion_mnist.yaml --methods vanilla kd dml "
                               "kdcl switokd --seeds 0 1 2 --out runs/sweep data.limit_train=10000")
    sw.add_argument("--config", required=True, help="YAML config file")
    sw.add_argument("--methods", nargs="+", default=["vanilla", "kd", "dml", "kdcl", "switokd"],
                    help="methods and variants: NAME[+LOSS][+ls][@key=value,...], e.g. dml+dkd kd+ls@tau=2 "
                         "(+LOSS sets method.loss, +ls method.logit_std=true, @ any method.* key; the part before "
                         "@ names the runs and the column)")
    sw.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    sw.add_argument("--out", default="runs/sweep", help="directory for the runs and the results (default runs/sweep)")
    sw.add_argument("--no-report", action="store_true", help="skip the HTML/PNG report")
    sw.add_argument("--workers", type=int, default=1, help="runs at once on this machine (default 1)")
    sw.add_argument("--storage", help="an Optuna storage the workers share (default with --workers: OUT/study.journal)")
    sw.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    sw.set_defaults(fn=cmd_sweep)


def _epochs_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs separated by commas, e.g. 3,10, got {text!r}") from None


def cmd_race(args: argparse.Namespace) -> int:
    from .race import RaceSpec, race

    command = "switokd race " + " ".join(args.argv)
    spec = RaceSpec(args.config, args.methods, args.seeds, args.out, args.overrides, eta=args.eta, rungs=args.rungs,
                    min_epochs=args.min_epochs, search=args.search, sampler=args.sampler,
                    sampler_seed=args.sampler_seed)
    result = race(spec, workers=args.workers, storage=args.storage, study=args.study, lease_s=args.lease,
                  command=command, log=lambda m: print(m, file=sys.stderr, flush=True))
    if result.study is None:  # a torchrun job's other ranks: rank 0 writes and prints
        return 0
    print(result.path.read_text())
    storage = args.storage or str(Path(args.out) / "study.journal")
    print(f"results in {result.path}; the study: optuna-dashboard {storage}")
    return 0 if result.data["done"] else 1


def add_race(sub: Any) -> None:
    """``switokd race``'s arguments."""
    ra = sub.add_parser("race", help="find the best method for your data within a budget: successive halving on "
                                     "validation, on Optuna",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Every (method, seed) is a trial of one Optuna study. All train to the first rung; "
                                    "the methods are ranked by their seeds' mean validation accuracy; the top 1/eta "
                                    "continue from their checkpoints to the next rung, the rest stop; and so on to "
                                    "train.epochs. Writes OUT/race.md and OUT/race.json (decisions, the finishers "
                                    "ranked on test and paired by seed against DML and KD, the stopped trials' curves, "
                                    "the compute of each trial) and OUT/winner.pt. Resumable: run the same command "
                                    "again. Needs data.val_split.",
                        epilog="examples:\n  switokd race --config configs/fashion_mnist.yaml --methods vanilla dml "
                               "switokd kd dist --seeds 0 1 --out runs/race --workers 2 data.val_split=0.1\n"
                               "  switokd race ... --storage postgresql://user@host/db   (workers on several "
                               "machines: the same command on each)\n  optuna-dashboard runs/race/study.journal")
    ra.add_argument("--config", required=True, help="YAML config file")
    ra.add_argument("--methods", nargs="+", required=True, help="as switokd sweep --methods")
    ra.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ra.add_argument("--out", default="runs/race", help="directory for the runs, the study and the results")
    ra.add_argument("--workers", type=int, default=1, help="trials at once on this machine (processes; default 1)")
    ra.add_argument("--storage", help="any Optuna storage URL (postgresql://..., mysql://...) or a journal file "
                                      "(default OUT/study.journal)")
    ra.add_argument("--study", help="the study's name (default: race)")
    ra.add_argument("--eta", type=float, default=3.0, help="each rung keeps the top 1/eta of the methods (default 3)")
    ra.add_argument("--rungs", type=_epochs_list, help="the rung epochs, comma-separated, e.g. 3,10 (default: "
                                                        "train.epochs/eta^k; the last epoch is always one)")
    ra.add_argument("--min-epochs", type=int, help="the first rung's epoch (default train.epochs/eta^2)")
    ra.add_argument("--search", type=int, default=0, help="sample N hyperparameter sets per method (tau, the "
                                                           "distillation weight, lr), each an arm (default 0: recipes)")
    ra.add_argument("--sampler", choices=["random", "qmc"], default="random", help="the Optuna sampler of --search")
    ra.add_argument("--sampler-seed", type=int, default=0)
    ra.add_argument("--lease", type=float, default=120.0,
                    help="seconds without a heartbeat after which a worker is taken for gone (default 120)")
    ra.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    ra.set_defaults(fn=cmd_race)


def cmd_cache(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .train.teacher_cache import fill
    from .train.trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    if not any(n.cache for n in cfg.networks):
        raise ConfigError("switokd cache: no network has a cache; set networks.NAME.cache=DIR on the frozen teacher")
    trainer = Trainer(cfg, writable=False)
    fill(trainer, log=print)
    return 0


def add_cache(sub: Any) -> None:
    """``switokd cache``'s arguments."""
    ca = sub.add_parser("cache", help="compute a frozen teacher's logits for every training view ahead of training",
                        description="Fill networks.NAME.cache (a directory) with the frozen teacher's logits for every "
                                    "training image and view (one per epoch with augmentation, drawn from "
                                    "data.augment_seed), so that every later run with the same teacher, data and "
                                    "augmentation reads them instead of running the teacher. A run fills it too, as "
                                    "it goes; this command does it up front. Entries already there are kept.",
                        epilog="example:\n  switokd cache --config configs/fashion_mnist.yaml method.name=kd "
                               "networks.teacher.checkpoint=runs/t/last.pt networks.teacher.cache=runs/t/cache "
                               "data.augment_seed=0")
    ca.add_argument("--config", help="YAML config file")
    ca.add_argument("overrides", nargs="*", metavar="key=value", help="the runs' config overrides")
    ca.set_defaults(fn=cmd_cache)


def cmd_report(args: argparse.Namespace) -> int:
    from .runs.report import write_report

    out = Path(args.out) if args.out else (Path(args.runs[0]) / "report" if len(args.runs) == 1 else Path("report"))
    page = write_report(args.runs, out)
    print(f"wrote {page} and its figures ({', '.join(sorted(p.name for p in out.glob('*.png')))})")
    return 0


def add_report(sub: Any) -> None:
    """``switokd report``'s arguments."""
    rp = sub.add_parser("report", help="figures and an HTML page from one or more run directories",
                        description="Draw test accuracy per epoch (runs overlaid), G and delta over the steps with "
                                    "expert-mode stretches shaded, the expert share per epoch, rho against eps, and "
                                    "a summary table, from the runs' own logs. Writes index.html and PNG files.")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (each holds epochs.jsonl)")
    rp.add_argument("--out", help="output directory (default: RUN_DIR/report for one run, ./report for several)")
    rp.set_defaults(fn=cmd_report)


def cmd_status(args: argparse.Namespace) -> int:
    from .runs.status import run_status, status_lines

    states = [run_status(r) for r in args.runs]
    if args.json:
        print(json.dumps(states, indent=1))
        return 0
    print("\n\n".join("\n".join(status_lines(s)) for s in states))
    return 0


def add_status(sub: Any) -> None:
    """``switokd status``'s arguments."""
    st = sub.add_parser("status", help="where runs stand (also while they train), from their files alone",
                        description="For each run directory: running, finished, stopped or diverged; epoch and step, "
                                    "the last images/s and the ETA; the last test accuracies; each pair's last G, "
                                    "delta, eps and rho and its expert share so far; the last checkpoint. Reads the "
                                    "run's files only, so it works on a run copied from another machine.")
    st.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(fn=cmd_status)


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy import export

    if args.quantize:
        from .deploy.quantize import export_int8
        if args.format != "onnx":
            raise UsageError("--quantize int8 needs --format onnx")
        r = export_int8(args.checkpoint, args.network, args.out, calibration_images_n=args.calibration_images,
                        calibration_dir=args.calibration, eval_images=args.eval_images, max_drop=args.max_drop,
                        data_dir=args.data_dir)
        print(f"wrote {r['out']} ({r['int8_bytes'] / 1024:.0f} KiB; fp32 {r['fp32_bytes'] / 1024:.0f} KiB) "
              f"and {r['sidecar']}")
        agree = ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["top1_agreement_with_fp32"].items())
        print(f"calibrated on {r['calibration']}; weights scaled {r['weights_scale']} (top-1 agreement with fp32 on "
              f"{r['selection_images']} held-out images: {agree})")
        print(f"test top-1 on {r['eval_images']} images: fp32 {r['fp32_acc']:.2f}%, int8 {r['int8_acc']:.2f}% "
              f"({r['int8_acc'] - r['fp32_acc']:+.2f} points; --max-drop {args.max_drop:g})")
        return 0
    if args.calibration or args.calibration_images != 512 or args.eval_images or args.max_drop != 1.0:
        raise UsageError("--calibration, --calibration-images, --eval-images and --max-drop go with --quantize int8")
    r = export(args.checkpoint, args.network, args.format, args.out)
    print(f"wrote {r['out']} and {r['sidecar']}")
    what = " (weights reloaded from the file)" if args.format == "safetensors" else ""
    print(f"checked on {r['checked_on']}: max abs logit difference against PyTorch{what} "
          f"{r['max_abs_diff']:.2e}, top-1 agreement {100 * r['top1_agreement']:.1f}%")
    return 0


def add_export(sub: Any) -> None:
    """``switokd export``'s arguments."""
    ex = sub.add_parser("export", help="export a trained network to ONNX or TorchScript, with a JSON sidecar",
                        description="Export one network of a checkpoint with a dynamic batch dimension. ONNX exports are "
                                    "run with onnxruntime on a batch of the run's test images before the command returns "
                                    "and must match PyTorch's logits to 1e-4. FILE.json describes the input (channels, "
                                    "size, mean/std) and the class names.")
    ex.add_argument("--checkpoint", required=True, help="a run's last.pt or best.pt")
    ex.add_argument("--network", default="student", help="which network (default: student)")
    ex.add_argument("--format", default="onnx", help="onnx (default), pt2 (torch.export), torchscript or safetensors "
                                                      "(weights only)")
    ex.add_argument("--out", required=True, help="output file, e.g. student.onnx")
    q = ex.add_argument_group("int8 (ONNX Runtime static quantization, checked on the test split)")
    q.add_argument("--quantize", choices=["int8"], help="write an int8 ONNX model instead of fp32")
    q.add_argument("--calibration-images", type=int, default=512, metavar="N",
                   help="calibrate on N training images of the checkpoint's data set (default 512)")
    q.add_argument("--calibration", metavar="DIR", help="calibrate on the image files of DIR instead")
    q.add_argument("--eval-images", type=int, default=0, metavar="N",
                   help="measure top-1 on the first N test images (default 0: all)")
    q.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                   help="refuse (exit 3, no file) if int8 loses more top-1 points than this (default 1.0)")
    q.add_argument("--data-dir", metavar="DIR", help="where the checkpoint's data set is, if it moved")
    ex.set_defaults(fn=cmd_export)


def cmd_bench(args: argparse.Namespace) -> int:
    from .deploy.bench import BenchModel, bench, bench_table

    models = [BenchModel.onnx(f) for f in args.models]
    if args.checkpoint:
        models.append(BenchModel.pytorch(args.checkpoint, args.network))
    elif args.network != "student":
        raise UsageError("--network goes with --checkpoint")
    if not models:
        raise UsageError("give ONNX files and/or --checkpoint")
    results = bench(models, threads=args.threads, batches=args.batch, seconds=args.seconds)
    if args.json:
        print(json.dumps([{"model": m.name, "source": m.source, "size_bytes": m.size_bytes,
                           "input_shape": list(m.input_shape), **r} for m, r in zip(models, results)], indent=1))
        return 0
    print("\n".join(bench_table(models, results, args.batch, args.threads)))
    return 0


def add_bench(sub: Any) -> None:
    """``switokd bench``'s arguments."""
    be = sub.add_parser("bench", help="latency and throughput of exported models (and a checkpoint's network)",
                        description="Time ONNX models with ONNX Runtime (and a checkpoint's network in PyTorch eager, "
                                    "for comparison) on this CPU: warmed up, call by call, the models interleaved "
                                    "round by round. Prints the file size, input shape, batch-1 latency (median, "
                                    "p90) and the large batch's throughput.",
                        epilog="example:\n  switokd bench student.onnx student-int8.onnx --checkpoint runs/demo/best.pt "
                               "--threads 1 --batch 1 256", formatter_class=argparse.RawDescriptionHelpFormatter)
    be.add_argument("models", nargs="*", metavar="FILE.onnx", help="ONNX models (their FILE.json sidecar gives the input)")
    be.add_argument("--checkpoint", help="also time this checkpoint's network in PyTorch eager")
    be.add_argument("--network", default="student", help="which network of --checkpoint (default: student)")
    be.add_argument("--threads", type=int, default=1, help="intra-op threads for every runtime (default 1)")
    be.add_argument("--batch", type=int, nargs="+", default=[1, 256], metavar="N",
                    help="batch sizes: the smallest gives the latency, the largest the throughput (default 1 256)")
    be.add_argument("--seconds", type=float, default=3.0, help="timed seconds per model and batch size (default 3)")
    be.add_argument("--json", action="store_true", help="print JSON")
    be.set_defaults(fn=cmd_bench)


def cmd_predict(args: argparse.Namespace) -> int:
    from .deploy import image_files, predict

    files = image_files(args.paths)
    results = predict(files, checkpoint=args.checkpoint, network=args.network, onnx=args.onnx, topk=args.topk)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        top = "  ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"])
        print(f"{r['file']}: {top}")
    return 0


def add_predict(sub: Any) -> None:
    """``switokd predict``'s arguments."""
    pr = sub.add_parser("predict", help="classify image files with a checkpoint's network or an exported ONNX model",
                        description="Read PNG/JPEG files (or folders of them), preprocess them as in evaluation and "
                                    "print the top-k class names with their probabilities.")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    pr.add_argument("--checkpoint", help="a run's last.pt or best.pt")
    pr.add_argument("--network", default="student", help="which network of the checkpoint (default: student)")
    pr.add_argument("--onnx", help="an exported ONNX model (its FILE.json sidecar is read too)")
    pr.add_argument("--topk", type=int, default=3, help="classes to show per image (default 3)")
    pr.add_argument("--json", action="store_true", help="print JSON")
    pr.set_defaults(fn=cmd_predict)


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        from .models import MODELS, count_parameters, create_model

        for name in MODELS.names():
            params = count_parameters(create_model(name, 10, 3, 32)) if args.params else None
            doc = (MODELS.get(name).__doc__ or "").strip().splitlines()
            line = f"{name:<20}" + (f" {params / 1e6:7.2f}M params (10 classes)" if params else "")
            print(line + (f"  {doc[0]}" if doc and not params else ""))
    elif args.what == "recipes":
        from .config import load_config
        from .methods import method_from_config
        from .race import parse_method

        print("the values an unset method.* key takes (set a key to override it), for the default pair WRN-16-2 -> "
              "WRN-16-1; sources in docs/method.md\n")
        for entry in ("kd", "kd+ls", "dkd", "dkd+ls", "dist", "dml", "dml+dkd", "dml+dist", "switokd", "uniokd", "kdcl"):
            label, _, over = parse_method(entry)
            method = method_from_config(load_config(None, list(over)))
            print(f"{label:<9} {method.describe_recipe()}")
    elif args.what == "methods":
        from .methods import LOSSES, METHODS

        for name in METHODS.names():
            doc = (METHODS.get(name).__doc__ or "").strip().splitlines()
            print(f"{name:<10} {doc[0] if doc else ''}")
        print("\ndistillation losses (method.loss; method.logit_std=true standardizes the logits for any of them):")
        for name in LOSSES.names():
            doc = (LOSSES.get(name).__doc__ or "").strip().splitlines()
            print(f"{name:<10} {doc[0] if doc else ''}")
    else:
        from .data import DATASETS

        for name in DATASETS.names():
            doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()
            print(f"{name:<15} {doc[0] if doc else ''}")
    return 0


def add_list(sub: Any) -> None:
    """``switokd list``'s arguments."""
    ls = sub.add_parser("list", help="list registered models, methods, datasets, or the methods' published recipes")
    ls.add_argument("what", choices=["models", "methods", "datasets", "recipes"])
    ls.add_argument("--params", action="store_true", help="models: count parameters (builds each model)")
    ls.set_defaults(fn=cmd_list)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="switokd",
        description="Online and offline knowledge distillation: SwitOKD (switchable teacher/student training), "
                    "UniOKD, DML, KDCL, the branch methods (ONE, OKDDip, PCL, FFL), KD, DKD, DIST and the feature "
                    "methods (FitNet to ReviewKD) side by side; sweeps and races to find the best for your data.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with: switokd train --config configs/fashion_mnist.yaml   (see `switokd train --help`)\n\n" + EXIT_CODES,
    )
    p.add_argument("--version", action="version", version=f"switokd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (add_train, add_eval, add_sweep, add_cache, add_race, add_report, add_status, add_export, add_bench, add_predict, add_list):
        add(sub)
    return p


EXIT_CODES = """\
exit codes:
  0    done
  2    bad config, data, checkpoint or argument (a one-line error says which and what was expected)
  3    training diverged (non-finite loss or weights); the last good checkpoint is kept;
       export --quantize int8: int8 lost more accuracy than --max-drop (no file written)
  4    a checkpoint could not be written (disk full, I/O error, read-only); the previous one is intact
  130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM: the current step finished and a checkpoint was written
"""


def main(argv: list[str] | None = None) -> int:
    """The ``switokd`` command; returns its exit code (see the README's table)."""
    code = _main(argv)
    if argv is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun worker ends here without the interpreter's teardown: a C++ thread (gloo's, torch 2.13) that
        # outlives the interpreter aborts the process (SIGABRT) after its last line, failing a job whose files
        # are all written. Distributed._destroy_at_exit stops gloo's threads; this guards against any other.
        # Our files are closed and fsynced by now; only the standard streams need flushing.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    from .errors import SwitokdError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line usage error (exit 2)
        return e.code if isinstance(e.code, int) else 2
    args.argv = argv[1:]
    try:
        return args.fn(args)
    except SwitokdError as e:  # every error of the library: one line, its own exit code
        print(f"switokd {args.command}: " + (f"{e.label}: " if e.label else "") + str(e), file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"switokd {args.command}: interrupted; the last checkpoint written is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
