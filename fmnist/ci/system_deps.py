"""The distribution packages one use of `make setup` installs: those it NEEDS (a distribution that lacks one
is a one-line error, before anything is installed) and those it only WANTS (skipped with one line).

`make setup` runs this with the system's python3 before the virtualenv exists: standard library only, no
fmnist import. A package counts as present when dpkg has it installed or, for the ones that other
distributions ship otherwise (Ubuntu's Chromium is a snap), when its command is on PATH.

    python3 fmnist/ci/system_deps.py --need "chromium postgresql" --want dataset-fashion-mnist [--sudo sudo]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

PREFIX = "system-deps:"
# A package whose command on PATH is as good as the package (installed from a snap, or by the runner's image).
COMMANDS = {"chromium": "chromium", "postgresql": "initdb"}
# What happens without a package a job only wants, and how to get one it needs where the archive has none.
WITHOUT = {"dataset-fashion-mnist": "the download stage fetches the official files from download.mirrors "
                                    "(params.yaml) instead"}
ELSEWHERE = {"chromium": "Ubuntu ships Chromium as a snap: `sudo snap install chromium` puts chromium on PATH",
             "postgresql": "install PostgreSQL's server so that initdb is on PATH",
             "dataset-fashion-mnist": "put the four official files in /usr/share/datasets/fashion-mnist"}


def installed(package: str) -> bool:
    command = COMMANDS.get(package)
    if command and shutil.which(command):
        return True
    if not shutil.which("dpkg-query"):
        return False
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip().endswith(" installed")


def installable(package: str) -> bool:
    """The archive has an installation candidate (a dry run of apt-get, which needs no root)."""
    done = subprocess.run(["apt-get", "install", "-s", "-qq", package], capture_output=True, text=True)
    return done.returncode == 0


def run_apt(sudo: list[str], *args: str) -> bool:
    return subprocess.run([*sudo, "apt-get", *args]).returncode == 0


def absent_line(package: str, needed: bool, why: str) -> str:
    if needed:
        return (f"{PREFIX} {package} is needed here but {why}; {ELSEWHERE.get(package, 'install it another way')}, "
                f"or leave it out of SYSTEM_NEED where nothing runs it (docs/ci.md#system-packages)")
    return f"{PREFIX} skipped {package} ({why}): {WITHOUT.get(package, 'nothing this job runs uses it')}"


def ensure(need: list[str], want: list[str], sudo: list[str]) -> int:
    """Install what is missing and available; 1 (after one line per missing needed package, with nothing
    installed) when a needed package cannot be had, else 0."""
    want = [p for p in want if p not in need]
    missing = [p for p in [*need, *want] if not installed(p)]
    if not missing:
        return 0
    if not shutil.which("apt-get"):
        available, why = set(), "this system has no apt-get"
    elif not run_apt(sudo, "update", "-qq"):
        available, why = set(), "apt-get update failed"
    else:
        available, why = {p for p in missing if installable(p)}, "this distribution's archive has no such package"
    absent = [p for p in missing if p not in available]
    for package in absent:
        print(absent_line(package, package in need, why), file=sys.stderr if package in need else sys.stdout)
    if any(p in need for p in absent):
        return 1
    to_install = [p for p in missing if p in available]
    if to_install:
        print(f"{PREFIX} installing {' '.join(to_install)}", flush=True)
        if not run_apt(sudo, "install", "-y", "-q", *to_install):
            print(f"{PREFIX} apt-get install {' '.join(to_install)} failed (its message is above)", file=sys.stderr)
            return 1
    return 0


def words(text: str) -> list[str]:
    return text.split()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--need", type=words, default=[], help="packages whose absence is an error (space-separated)")
    p.add_argument("--want", type=words, default=[], help="packages skipped with one line when absent")
    p.add_argument("--sudo", type=words, default=[], help="the command that makes apt-get root (empty as root)")
    args = p.parse_args(argv)
    return ensure(args.need, args.want, args.sudo)


if __name__ == "__main__":
    sys.exit(main())
