"""How wide is wide enough? The network-linearization gap predicted from narrow nets at initialisation.

    python -m study.predict                                  # the default FC net on the seed's cubic data
    python -m study.predict --preset tiny                    # seconds
    python -m study.predict --activation erf --depth 3 --widths 32,64,128,256 --out results/predict_erf
    python -m study.predict --preset digits                  # scikit-learn's digits, k = 10 outputs

Nothing is trained: per width and seed the first-order prediction of the gap (studylib.perturb), then a
log-log fit over width extrapolated to --gap-threshold. Each width is saved under OUT/cells/.
"""

from studylib import cli


def main(argv=None) -> None:
    cli.main("predict", __doc__, argv)


if __name__ == "__main__":
    main()
