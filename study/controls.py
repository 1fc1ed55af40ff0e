"""Positive controls: settings where the theory guarantees agreement, measured with the study's code.

    python -m study.controls                   # lazy scaling (erf, relu; 2 widths; 7 alphas) + closing sweep
    python -m study.controls --preset tiny     # seconds
    python -m study.controls --controls lazy --alphas 1,4,16,64 --lazy-widths 256
    python -m study.controls --controls closing --closing-x-range 1 --closing-widths 64,256,1024

Each cell is saved under OUT/cells/ as soon as it finishes; rerunning the same command reuses
finished cells (--force recomputes them, --clean removes cells of older configs).
"""

from studylib import cli


def main(argv=None) -> None:
    cli.main("controls", __doc__, argv)


if __name__ == "__main__":
    main()
