"""Regenerate all figures from stored results (no training; seconds).

    python -m study.figures                         # the default results folders that exist
    python -m study.figures results/compare --to figures
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m study.figures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="*", help="results folders (default: results/<study> that exist)")
    p.add_argument("--to", default=None, help="also copy the figures into this folder (e.g. figures)")
    args = p.parse_args(argv)
    from studylib import figures

    folders = args.folders or [f for f in figures.DEFAULT_FOLDERS if (Path(f) / "summary.json").is_file()]
    if not folders:
        sys.exit("error: no results folder given and none of " + ", ".join(figures.DEFAULT_FOLDERS) + " exists")
    try:
        paths = figures.regenerate(folders, to=args.to)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
