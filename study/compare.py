"""Finite network vs linearization vs infinite-width closed form, across widths.

    python -m study.compare                  # default sweep (~2 min on 2 CPU cores)
    python -m study.compare --preset tiny    # seconds
    python -m study.compare --widths 64,256,1024 --seeds 5 --steps 2000 --out results/mine
    python -m study.compare --preset large --plan   # memory per width, then exit

Each width is saved under OUT/cells/ as soon as it finishes; rerunning the same command reuses
finished widths (--force recomputes them, --clean removes cells of older configs).
"""

from studylib import cli


def main(argv=None) -> None:
    cli.main("compare", __doc__, argv)


if __name__ == "__main__":
    main()
