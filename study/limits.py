"""NTK parameterization and μP side by side: the same measurements vs width from stored compare runs.

    python -m study.compare --centre on --out results/compare_centred
    python -m study.compare --parameterization mup --out results/compare_mup
    python -m study.limits results/compare_centred results/compare_mup --out figures/limits_1d

Prints a markdown table (values at the narrowest and widest width, fitted slopes with 95% intervals beside the
NTK rates) and writes the figure OUT.png/.pdf. Reads summary.json only (no JAX; docs/mup.md).
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m study.limits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="compare results folders of one problem (e.g. an NTK and a mup run)")
    p.add_argument("--out", default=None, metavar="STEM", help="figure path without suffix (default: no figure)")
    args = p.parse_args(argv)
    from studylib import limits

    try:
        summaries = limits.load(args.folders)
        print(limits.table(summaries))
        if args.out:
            print("figure:", ", ".join(str(x) for x in limits.figure(summaries, args.out)))
    except (ValueError, KeyError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
