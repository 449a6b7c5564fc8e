"""Stage download: fetch the four official files, verified, into the torchvision layout."""

import _bootstrap  # noqa: F401,I001 (first: the project's environment)

from fmnist.data.fetch import fetch_all
from fmnist.core.entry import load, parser, run_main


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", default="data/raw")
    args = p.parse_args()
    cfg = load(args).download
    sources = fetch_all(args.out, cfg.mirrors, cfg.local_dirs, cfg.timeout_s, cfg.retries)
    for name, source in sources.items():
        print(f"{name}: verified, from {source}")


if __name__ == "__main__":
    run_main(main)
