"""Stage resolve: each recipe of train_recipes as the active profile runs it, one JSON file per recipe.

A train stage depends on its own file, not on params.yaml's sections, so a change to a base, a profile or
a budget reruns exactly the stages whose resolved recipe changed (DVC compares the files' hashes)."""

import _bootstrap  # noqa: F401,I001 (first: the project's environment)

from pathlib import Path

from fmnist.core.entry import load, parser, run_main
from fmnist.core.io import atomic_write_text


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", default="resolved", type=Path)
    args = p.parse_args()
    params = load(args)
    runs = [params.run_of(name) for name in params.train_recipes]  # every recipe resolved before any file
    args.out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        atomic_write_text(args.out / f"{run.name}.json", run.to_json())
    print(f"{len(runs)} recipes resolved for profile {params.profile} into {args.out}/")


if __name__ == "__main__":
    run_main(main)
