"""Command line: ``python -m h3pipe.demo --out DIR [--bbox minx,miny,maxx,maxy] [--size N]``.

Writes synthetic cop-dem-glo-30 tiles with :func:`h3pipe.demo.copdem.generate_tiles`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rasterio.errors import RasterioError

from h3pipe.demo.copdem import generate_tiles
from h3pipe.demo.stac import write_static_catalog

# Rwanda; touches the six cells S02/S03 x E028/E029/E030.
DEFAULT_BBOX = (28.86, -2.84, 30.90, -1.05)
_PROG = "python -m h3pipe.demo"
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block before the message; keep errors to one line.
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parse_bbox(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"expected minx,miny,maxx,maxy, got {text!r}")
    try:
        minx, miny, maxx, maxy = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bbox values must be numbers, got {text!r}") from None
    return minx, miny, maxx, maxy


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_PROG,
        description="Generate deterministic stand-in Copernicus DEM GLO-30 COG tiles.",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument(
        "--bbox",
        type=_parse_bbox,
        default=DEFAULT_BBOX,
        metavar="MINX,MINY,MAXX,MAXY",
        help="lon/lat bbox; one tile per 1-degree cell it touches (default: Rwanda)",
    )
    parser.add_argument("--size", type=int, default=3600, help="pixels per tile side")
    parser.add_argument("--seed", type=int, default=0, help="seed for noise and void positions")
    parser.add_argument("--overwrite", action="store_true", help="rewrite tiles that already exist")
    parser.add_argument("--stac-catalog", type=Path, metavar="DIR",
                        help="also write a static STAC collection of the tiles there "
                        "(a local mirror of cop-dem-glo-30)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    counts = {True: 0, False: 0}

    def report(path: Path, written: bool) -> None:
        counts[written] += 1
        print(f"{'wrote  ' if written else 'skipped'} {path}", flush=True)

    try:
        tiles = generate_tiles(
            args.out,
            args.bbox,
            size=args.size,
            seed=args.seed,
            overwrite=args.overwrite,
            on_tile=report,
        )
        if args.stac_catalog:
            catalog = write_static_catalog(args.stac_catalog, tiles)
            print(f"STAC collection of {len(tiles)} items: {catalog}")
    except (ValueError, OSError, RasterioError, RuntimeError) as exc:
        one_line = " ".join(str(exc).split())  # GDAL messages can span lines
        print(f"{_PROG}: error: {one_line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    total = counts[True] + counts[False]
    print(f"{total} tiles in {args.out} ({counts[True]} written, {counts[False]} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
