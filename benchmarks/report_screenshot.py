"""Render a `tdbnas run` HTML report in headless Chromium and keep the screenshot.

    python benchmarks/report_screenshot.py runs/tdbnas            # -> results/tdbnas_run_report.png

Proves the report opens in a real browser (its images are embedded, so the page needs no
server or network). Needs Debian's `chromium` (`apt-get install chromium`); the flags are the
ones this machine's closed network needs (no background networking, no first-run fetches).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def crop_blank_bottom(path: Path, margin: int = 24) -> None:
    """The window is taller than the page: cut the white rows below the content."""
    from PIL import Image, ImageChops

    image = Image.open(path).convert("RGB")
    box = ImageChops.difference(image, Image.new("RGB", image.size, "white")).getbbox()
    if box:
        image.crop((0, 0, image.width, min(image.height, box[3] + margin))).save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a tdbnas run directory (holds report/report.html)")
    parser.add_argument("--out", type=Path, default=RESULTS / "tdbnas_run_report.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=5200, help="tall enough for the whole page")
    args = parser.parse_args()
    page = (args.run / "report" / "report.html").resolve()
    if not page.is_file():
        parser.error(f"{page} does not exist: run `tdbnas run` first")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        parser.error("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={args.width},{args.height}",
                   f"--screenshot={args.out.resolve()}", page.as_uri()]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    crop_blank_bottom(args.out)
    print(f"{page} rendered by {subprocess.run([browser, '--version'], capture_output=True, text=True).stdout.strip()}"
          f" -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
