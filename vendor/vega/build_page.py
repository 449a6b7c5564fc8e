"""The page template of `dvc plots show` (.dvc/config: plots.html_template) with Vega, Vega-Lite and Vega-Embed
inline, so the plots draw on a machine without a network (DVC's own page loads them from a CDN).

    python vendor/vega/build_page.py          # fetch the pinned packages from the npm registry, verify, write the page
    python vendor/vega/build_page.py --check  # offline: the committed page holds exactly the pinned files

The pins (pins.json) are the versions dvc-render's page loads; to move them, edit a version there, set its two
integrities to the registry's dist.integrity and "", run this, and pin the file integrity it prints.
"""

import argparse
import base64
import hashlib
import io
import json
import re
import sys
import tarfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PINS = HERE / "pins.json"
PAGE = HERE / "dvc-plots.html"
REGISTRY = "https://registry.npmjs.org"

# dvc-render fills {refresh_tag} and {plot_divs}; the page leaves out its scripts placeholder, where DVC would
# put the CDN's script tags.
HEAD = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Built by vendor/vega/build_page.py from vendor/vega/pins.json: do not edit. -->
"""
TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""
SCRIPT = '<script data-package="{spec}">\n{code}\n</script>\n'
SCRIPT_RE = re.compile(r'<script data-package="([^"]+)">\n(.*?)\n</script>\n', re.S)


class PinError(Exception):
    pass


def integrity(data: bytes) -> str:
    """Subresource-integrity form, as the npm registry's dist.integrity."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def spec(pin: dict) -> str:
    return f"{pin['name']}@{pin['version']}"


def tarball_url(pin: dict) -> str:
    return f"{REGISTRY}/{pin['name']}/-/{pin['name']}-{pin['version']}.tgz"


def fetch_pinned_file(pin: dict) -> bytes:
    """The pinned file out of the package's registry tarball, both checked against their pins."""
    try:
        with urllib.request.urlopen(tarball_url(pin), timeout=60) as response:
            tarball = response.read()
    except OSError as error:
        raise PinError(f"cannot fetch {tarball_url(pin)} ({error}): the npm registry must be reachable to rebuild "
                       f"the page; the committed {PAGE.name} works without it") from None
    if integrity(tarball) != pin["tarball_integrity"]:
        raise PinError(f"{tarball_url(pin)}: integrity {integrity(tarball)} is not the pinned "
                       f"{pin['tarball_integrity']}; fix the pin in {PINS.name} only if the registry's dist.integrity "
                       "says so")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        code = archive.extractfile(f"package/{pin['file']}").read()
    if integrity(code) != pin["file_integrity"]:
        raise PinError(f"{spec(pin)} {pin['file']}: integrity {integrity(code)} is not the pinned "
                       f"{pin['file_integrity'] or '(none)'}: pin it in {PINS.name} if the tarball's pin is right")
    return code


def render_page(pins: list[dict], codes: dict[str, str]) -> str:
    for name, code in codes.items():
        if "</script" in code.lower():
            raise PinError(f"{name} holds '</script': it cannot be inlined in a script element")
    return HEAD + "".join(SCRIPT.format(spec=spec(pin), code=codes[spec(pin)]) for pin in pins) + TAIL


def check_page(pins: list[dict], page: str) -> None:
    """The page is what a build from the pinned files writes, byte for byte."""
    codes = dict(SCRIPT_RE.findall(page))
    for pin in pins:
        code = codes.get(spec(pin))
        if code is None:
            raise PinError(f"{PAGE.name} does not inline {spec(pin)}: rebuild it (python {Path(__file__).name})")
        if integrity(code.encode()) != pin["file_integrity"]:
            raise PinError(f"{PAGE.name}: the inlined {spec(pin)} is not the pinned {pin['file']}: rebuild it")
    if set(codes) != {spec(pin) for pin in pins} or render_page(pins, codes) != page:
        raise PinError(f"{PAGE.name} differs from what {Path(__file__).name} builds from {PINS.name}: rebuild it")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify the committed page offline; write nothing")
    args = parser.parse_args(argv)
    pins = json.loads(PINS.read_text())["packages"]
    try:
        if args.check:
            check_page(pins, PAGE.read_text(encoding="utf-8"))
            print(f"{PAGE.relative_to(HERE.parent.parent)}: inlines {', '.join(map(spec, pins))} as pinned")
            return 0
        codes = {spec(pin): fetch_pinned_file(pin).decode("utf-8") for pin in pins}
        page = render_page(pins, codes)
        check_page(pins, page)
    except PinError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(HERE.parent.parent)} ({len(page.encode()) // 1024} KiB): "
          f"{', '.join(map(spec, pins))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
