"""The coordinate check: NTK parameterization against μP (studylib.mup), microsoft/mup's standard test.

    python -m study.coordcheck                       # widths 64...4096, depth 3, 5 GD steps, 4 seeds (~minutes)
    python -m study.coordcheck --preset tiny         # seconds
    python -m study.coordcheck --gamma0 0.25 --parameterizations mup

Per width the RMS over coordinates of each hidden layer's activation and of its change since init, and of the
output, after each of the first GD steps; the fitted slope over width per layer. In μP every update stays
O(1) in width; in NTK parameterization the hidden updates shrink as n^-1/2. Each width is saved under OUT/cells/.
"""

from studylib import cli


def main(argv=None) -> None:
    cli.main("coordcheck", __doc__, argv)


if __name__ == "__main__":
    main()
