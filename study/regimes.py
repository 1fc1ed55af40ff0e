"""Mode-resolved dynamics and a map of the lazy regime: where the NTK theory holds and where it fails.

    python -m study.regimes                    # coarse map (~4 min on 2 shared CPU cores)
    python -m study.regimes --preset tiny      # seconds
    python -m study.regimes --preset full      # the whole product of axes: a GPU or a long run
    python -m study.regimes --widths 64,256 --depths 1,3,5 --out results/mine
    python -m study.regimes --figures-only --out results/regimes   # redraw from stored results

Each cell (one setting at one width) is saved under OUT/cells/ as soon as it finishes; rerunning
the same command, or a sweep sharing cells with an earlier one, reuses them (--force recomputes
them, --clean removes cells of older configs).
"""

from studylib import cli


def main(argv=None) -> None:
    cli.main("regimes", __doc__, argv)


if __name__ == "__main__":
    main()
