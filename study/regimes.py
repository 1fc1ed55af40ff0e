"""Mode-resolved dynamics and a map of the lazy regime: where the NTK theory holds and where it fails.

    python -m study.regimes                    # coarse map (~10 min on 2 shared CPU cores)
    python -m study.regimes --preset tiny      # seconds
    python -m study.regimes --preset full      # the whole product of axes: a GPU or a long run
    python -m study.regimes --widths 64,256 --depths 1,3,5 --out results/mine
    python -m study.regimes --figures-only --out results/regimes   # redraw from stored results
"""

from __future__ import annotations

import argparse

from studylib import cli


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.replace(" ", "").split(",") if v)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.regimes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="default | tiny | full (full is meant for a GPU or a long run)")
    p.add_argument("--config", help="TOML file with config keys (flags override it)")
    p.add_argument("--widths", type=cli.int_list, help="comma-separated hidden widths")
    p.add_argument("--seeds", type=int, help="initialisations per cell (default: 3)")
    p.add_argument("--first-seed", dest="first_seed", type=int, help="first PRNG seed (default: 0)")
    p.add_argument("--steps", type=int, help="full-batch GD steps (default: 300)")
    p.add_argument("--checkpoints", dest="n_checkpoints", type=int, help="log-spaced checkpoints (default: 24)")
    p.add_argument("--lr-fraction", dest="lr_fraction", type=float,
                   help="base cell's rate as a fraction of 2N/lambda_max of the analytic NTK (default: 0.5)")
    p.add_argument("--dtype", help="float32 (default) or float64")
    p.add_argument("--ntk-implementation", dest="ntk_implementation", type=int, help="1 or 2 (default: 2)")
    p.add_argument("--sweep", help="one_at_a_time (default: width x each axis around the base) or product")
    p.add_argument("--lr-fractions", dest="lr_fractions", type=_float_list, help="map axis (default: 0.1,0.5,0.9)")
    p.add_argument("--depths", type=cli.int_list, help="map axis (default: 1,2,3,4,5)")
    p.add_argument("--x-ranges", dest="x_ranges", type=_float_list, help="map axis: input scale (default: 1,2.5,5)")
    p.add_argument("--parameterizations", type=_str_list, help="map axis (default: ntk,standard)")
    p.add_argument("--options", type=_str_list,
                   help="model options at the base cell (default: plain,centred,doubled,out_scale,float64)")
    p.add_argument("--output-scale", dest="output_scale", type=float, help="alpha of option out_scale (default 0.25)")
    p.add_argument("--gap-threshold", dest="gap_threshold", type=float,
                   help="relative gap counted as 'wide enough' (default: 0.1)")
    cli.add_model_flags(p)
    p.add_argument("--x-range", dest="data.train_range", type=float,
                   help="base cell's input scale: x in [-x_range, x_range] (default: 5)")
    p.add_argument("--out", default="results/regimes", help="output folder (default: results/regimes)")
    p.add_argument("--force", action="store_true", help="recompute cells whose stored results match the config")
    p.add_argument("--no-figures", action="store_true", help="do not draw figures")
    p.add_argument("--figures-only", action="store_true", help="only redraw figures from --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


CONFIG_FLAGS = ("widths", "seeds", "first_seed", "steps", "n_checkpoints", "lr_fraction", "dtype",
                "ntk_implementation", "sweep", "lr_fractions", "depths", "x_ranges", "parameterizations",
                "options", "output_scale", "gap_threshold")


def main(argv=None) -> None:
    args = parse_args(argv)
    flags = {k: v for k, v in vars(args).items()
             if k in CONFIG_FLAGS or k.startswith("model.") or k.startswith("data.")}

    def go():
        from studylib import regimes
        from studylib.results import read_json

        if not args.figures_only:
            cfg = cli.assemble(regimes.RegimesConfig, presets=regimes.PRESETS, preset=args.preset,
                               config_file=args.config, flags=flags)
            summary = regimes.run(cfg, args.out, progress=not args.no_progress, force=args.force)
            print(regimes.format_report(read_json(f"{args.out}/summary.json")))
            print(f"\nwrote {args.out}/summary.json, curves.npz ({summary['wall_seconds']:.0f} s)")
        if not args.no_figures:
            from studylib import plots_regimes

            paths = plots_regimes.regimes_figures(args.out)
            print("figures: " + ", ".join(str(p) for p in paths))

    cli.main_guard(go)


if __name__ == "__main__":
    main()
