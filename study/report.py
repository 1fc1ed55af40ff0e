"""Write figures/REPORT.md from stored results (and refresh the figures it embeds).

    python -m study.report                          # the default results folders that exist
    python -m study.report results/compare --out figures/REPORT.md
    python -m study.report --latex                  # also figures/REPORT_tables.tex (booktabs)
    python -m study.report --update results/compare_mup   # replace or add one section, keep the others
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m study.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="*", help="results folders (default: results/<study> that exist)")
    p.add_argument("--out", default="figures/REPORT.md", help="report path (default: figures/REPORT.md)")
    p.add_argument("--latex", action="store_true",
                   help="also write the report's tables as LaTeX (booktabs) to --latex-out")
    p.add_argument("--latex-out", default=None, metavar="PATH",
                   help="LaTeX tables path (implies --latex; default: <report stem>_tables.tex beside the report)")
    p.add_argument("--update", action="store_true",
                   help="keep the existing report's sections of other folders as they are; replace or append the "
                        "sections of the folders given")
    args = p.parse_args(argv)
    from studylib import figures, report

    folders = args.folders or [f for f in figures.DEFAULT_FOLDERS if (Path(f) / "summary.json").is_file()]
    if not folders:
        sys.exit("error: no results folder given and none of " + ", ".join(figures.DEFAULT_FOLDERS) + " exists")
    try:
        latex = args.latex_out or (Path(args.out).with_name(Path(args.out).stem + "_tables.tex")
                                   if args.latex else None)
        print(report.write_report(folders, args.out, latex_path=latex, update=args.update))
        if latex is not None:
            print(latex)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
