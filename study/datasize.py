"""How wide for how much data: centred FC networks on growing digits training sets against infinite width.

    python -m study.datasize                      # N 64...512, widths 64...1024, 3 seeds, 200 GD steps (~6-8 min)
    python -m study.datasize --preset large       # N up to 1024, widths to 2048
    python -m study.datasize --preset tiny        # seconds
    python -m study.datasize --tolerance 0.2 --n-trains 64,256

Per (N, width) the centred network (f(theta) - f(theta_0)) is trained by full-batch GD at half its own critical
rate; its test loss is set against NT's closed form with the analytic NTK at the same time and at t = infinity.
Per N: the smallest width within the tolerance of infinite width, beside Atanasov et al. 2023 (width ~ N^2).
Each (N, width) is saved under OUT/cells/.
"""

from studylib import cli


def main(argv=None) -> None:
    cli.main("datasize", __doc__, argv)


if __name__ == "__main__":
    main()
