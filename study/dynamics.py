"""Training dynamics under mini-batch SGD: the seed's experiment, faithfully, then with seeds.

    python -m study.dynamics --preset seed --seeds 1     # the seed's exact protocol (~9 min here)
    python -m study.dynamics                             # the same with 3 seeds (mean and band)
    python -m study.dynamics --preset ntk                # NTK parameterization, lr from the analytic NTK
    python -m study.dynamics --preset quick              # 200 epochs, under a minute
    python -m study.dynamics --widths 10,100 --batch-sizes 1,10 --epochs 2000 --out results/mine
    python -m study.dynamics --preset quick --arch res_fc --arch-option blocks=2   # any architecture

Each (width, batch size) cell is saved under OUT/cells/ as soon as it finishes; rerunning the
same command reuses finished cells (--force recomputes them, --clean removes cells of older configs).
"""

from studylib import cli


def main(argv=None) -> None:
    cli.main("dynamics", __doc__, argv)


if __name__ == "__main__":
    main()
