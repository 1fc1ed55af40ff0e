"""Ensembles of finite networks against the infinite-width NTK / NNGP Gaussian process (Lee et al. 2019 Fig. 2).

    python -m study.ensemble                   # default: widths 5..500, 32 members (~2.5 min on 2 CPU cores)
    python -m study.ensemble --preset tiny     # seconds
    python -m study.ensemble --preset large    # 128 members, widths 8..2048, 3000 steps: meant for a GPU
    python -m study.ensemble --widths 16,256 --members 64 --steps 500 --out results/mine
    python -m study.ensemble --preset large --plan   # parameters and members per batch, then exit

Each width is saved under OUT/cells/ as soon as it finishes; rerunning the same command reuses
finished widths (--force recomputes them, --clean removes cells of older configs). The GP side
is always float64; --dtype sets the networks' dtype.
"""

from studylib import cli


def main(argv=None) -> None:
    cli.main("ensemble", __doc__, argv)


if __name__ == "__main__":
    main()
