"""`fmnist ci plan|train|report` and `fmnist server start|stop|status`: the argument parsers and what
they call. The workflow (.github/workflows/retrain.yml), the Makefile and the rehearsal run these."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fmnist.core.errors import ConfigError

DEFAULT_SERVER_DIR = Path(".fmnist/server")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ci = sub.add_parser("ci", help="the steps of CI retraining (the workflow runs these)")
    ci_sub = ci.add_subparsers(dest="ci_command", required=True)
    plan = ci_sub.add_parser("plan", help="pull or build the data and push it, then print the architectures whose "
                                          "train stage is out of date as JSON (also to $GITHUB_OUTPUT when set)")
    plan.add_argument("--dry-output", type=Path, help="read this saved `dvc repro --dry` output instead "
                                                      "(nothing pulled or built)")
    plan.add_argument("--all", action="store_true", help="every architecture (the weekly retraining)")
    train = ci_sub.add_parser("train", help="reproduce train@ARCH, push the model, write a bundle for the report job")
    train.add_argument("arch")
    train.add_argument("--bundle", type=Path, default=Path("ci-bundles"), help="folder for the bundle (ARCH/ in it)")
    train.add_argument("--force", action="store_true", help="retrain even if the stage is up to date")
    report = ci_sub.add_parser("report", help="merge the train bundles, evaluate and report, push, write the "
                                              "pull-request comment (metrics diff, gate decision, plots)")
    report.add_argument("bundles", nargs="*", type=Path, help="bundle folders written by `fmnist ci train`")
    report.add_argument("--comment", type=Path, default=Path("ci-comment.md"))
    report.add_argument("--base", default="main", help="git revision the metrics are compared with")
    report.add_argument("--commit", metavar="MESSAGE", help="commit dvc.lock, metrics, plots and reports with it")
    report.add_argument("--push", metavar="BRANCH", help="then push that commit to origin's BRANCH")
    for p in (plan, train, report):
        p.add_argument("--profile", default="", metavar="NAME",
                       help="set params.yaml's profile first, one of those under its profiles: (empty: keep it)")
    server = sub.add_parser("server", help="a local MLflow tracking server on PostgreSQL (loopback only)")
    server.add_argument("action", choices=("start", "stop", "status"))
    server.add_argument("--dir", type=Path, default=DEFAULT_SERVER_DIR, help="database cluster, artifacts, logs")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=5000)
    server.add_argument("--pg-port", type=int, default=5433)


def ci(args: argparse.Namespace) -> int:
    from fmnist.ci import plan, steps

    if args.profile:
        from fmnist.models.checks import check_every_profile
        from fmnist.params_edit import set_profile

        set_profile(Path("params.yaml"), args.profile, check_every_profile)
    if args.ci_command == "plan":
        if args.dry_output is not None and not args.dry_output.is_file():
            raise ConfigError(f"{args.dry_output}: no such file; save one with "
                              f"`dvc repro --dry --allow-missing --glob 'train@*' > {args.dry_output}`")
        if args.dry_output is None:
            plan.prepare_data()
        if args.all:
            from fmnist.core.config import load_params

            archs = list(load_params(Path("params.yaml")).train_recipes)
        else:
            archs = plan.architectures_to_train(args.dry_output.read_text() if args.dry_output else plan.dry_run())
        plan.github_output(archs)
        print(json.dumps(archs))
    elif args.ci_command == "train":
        steps.train(args.arch, args.bundle, force=args.force)
    else:
        bundles = [p for b in args.bundles for p in ([b] if (b / steps.ENTRY_FILE).is_file() else sorted(b.glob("*/")))]
        record = steps.report(bundles, args.comment, args.base)
        if args.commit:
            steps.commit_results(args.commit)
        if args.push:
            steps.push_branch(args.push)
        print(json.dumps({k: record[k] for k in ("merged", "ran", "from_run_cache")}))
    return 0


def server(args: argparse.Namespace) -> int:
    from fmnist.ci import server as srv

    if args.action == "start":
        print(srv.start(args.dir, args.host, args.port, args.pg_port).tracking_uri)
    elif args.action == "stop":
        srv.stop(args.dir)
    else:
        print(srv.status(args.dir).tracking_uri)
    return 0
