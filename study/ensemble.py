"""Ensembles of finite networks against the infinite-width NTK / NNGP Gaussian process (Lee et al. 2019 Fig. 2).

    python -m study.ensemble                   # default: widths 5..500, 32 members (~3-4 min on 2 CPU cores)
    python -m study.ensemble --preset tiny     # seconds
    python -m study.ensemble --preset large    # 128 members, widths 8..2048, 3000 steps: meant for a GPU
    python -m study.ensemble --widths 16,256 --members 64 --steps 500 --out results/mine
"""

from __future__ import annotations

import argparse

from studylib import cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.ensemble", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="default | tiny | large (large is meant for a GPU)")
    p.add_argument("--config", help="TOML file with config keys (flags override it)")
    p.add_argument("--widths", type=cli.int_list, help="comma-separated hidden widths")
    p.add_argument("--members", type=int, help="networks per width (default: 32)")
    p.add_argument("--first-seed", dest="first_seed", type=int, help="first PRNG seed (default: 0)")
    p.add_argument("--steps", type=int, help="full-batch GD steps (default: 1000)")
    p.add_argument("--lr", type=float, help="absolute learning rate of full training (default: from --lr-fraction)")
    p.add_argument("--lr-fraction", dest="lr_fraction", type=float,
                   help="full training: fraction of 2N/lambda_max of the analytic NTK (default: 0.25)")
    p.add_argument("--readout-lr-fraction", dest="readout_lr_fraction", type=float,
                   help="readout-only training: fraction of 2N/lambda_max of the analytic NNGP (default: 0.25)")
    p.add_argument("--no-readout", dest="readout", action="store_const", const=False,
                   help="skip the readout-only ensembles")
    p.add_argument("--checkpoints", dest="n_checkpoints", type=int,
                   help="number of log-spaced checkpoints, t=0 and the last step included (default: 10)")
    p.add_argument("--mc-repeats", dest="mc_repeats", type=int,
                   help="repeats of the Monte-Carlo floor (default: 200)")
    p.add_argument("--chunk", type=int, help="members per vmapped batch (default: all)")
    p.add_argument("--dtype", help="float32 (default) or float64 for the networks (the GP is always float64)")
    cli.add_model_flags(p)
    cli.add_data_flags(p)
    p.add_argument("--out", default="results/ensemble", help="output folder (default: results/ensemble)")
    p.add_argument("--force", action="store_true", help="recompute widths whose stored results match the config")
    p.add_argument("--no-figures", action="store_true", help="do not draw figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


CONFIG_FLAGS = ("widths", "members", "first_seed", "steps", "lr", "lr_fraction", "readout_lr_fraction",
                "readout", "n_checkpoints", "mc_repeats", "chunk", "dtype")


def main(argv=None) -> None:
    args = parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k in CONFIG_FLAGS or k.startswith(("model.", "data."))}

    def go():
        from studylib import ensemble
        from studylib.results import read_json

        cfg = cli.assemble(ensemble.EnsembleConfig, presets=ensemble.PRESETS, preset=args.preset,
                           config_file=args.config, flags=flags)
        summary = ensemble.run(cfg, args.out, progress=not args.no_progress, force=args.force)
        print(ensemble.format_table(read_json(f"{args.out}/summary.json")))
        print(f"wrote {args.out}/summary.json, ensemble.npz ({summary['wall_seconds']:.0f} s)")
        if not args.no_figures:
            from studylib import plots_ensemble

            paths = plots_ensemble.ensemble_figures(args.out)
            print("figures: " + ", ".join(str(p) for p in paths))

    cli.main_guard(go)


if __name__ == "__main__":
    main()
