"""Training dynamics under mini-batch SGD: the seed's experiment, faithfully, then with seeds.

    python -m study.dynamics --preset seed --seeds 1     # the seed's exact protocol (~15 min here)
    python -m study.dynamics                             # the same with 3 seeds (mean and band)
    python -m study.dynamics --preset ntk                # NTK parameterization, lr from the analytic NTK
    python -m study.dynamics --preset quick              # 200 epochs, under a minute
    python -m study.dynamics --widths 10,100 --batch-sizes 1,10 --epochs 2000 --out results/mine
    python -m study.dynamics --preset quick --arch res_fc --arch-option blocks=2   # any architecture

Each (width, batch size) cell is saved under OUT/cells/ as soon as it finishes; rerunning
the same command skips finished cells (--force recomputes them).
"""

from __future__ import annotations

import argparse

from studylib import cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.dynamics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="seed (default) | ntk | quick | tiny")
    p.add_argument("--config", help="TOML file with config keys (flags override it)")
    p.add_argument("--widths", type=cli.int_list, help="comma-separated hidden widths (default: 10,100,1000)")
    p.add_argument("--batch-sizes", dest="batch_sizes", type=cli.int_list,
                   help="comma-separated batch sizes, each dividing N (default: 1,5,10)")
    p.add_argument("--epochs", type=int, help="epochs (default: 20000)")
    p.add_argument("--record-every", dest="record_every", type=int, help="epochs between records (default: 5)")
    p.add_argument("--lr", type=float, help="learning rate (seed preset: 0.001)")
    p.add_argument("--lr-fraction", dest="lr_fraction", type=float,
                   help="when no --lr: fraction of the analytic NTK's full-batch critical rate")
    p.add_argument("--seeds", type=int, help="number of seeds (default: 3; the seed used 1)")
    p.add_argument("--first-seed", dest="first_seed", type=int, help="first PRNG seed (default: 0)")
    p.add_argument("--loss", help="mse = mean((f-y)^2), the seed's (default) | half_mse = NT's 1/2 mean")
    p.add_argument("--dtype", help="float32 (default) or float64")
    p.add_argument("--method", help="auto (default) | direct | lowrank | generic: trainer (same numbers); direct "
                                    "and lowrank are the fast FC trainer (fc, erf_fc), generic trains any --arch")
    cli.add_model_flags(p)
    p.add_argument("--out", default="results/dynamics", help="output folder (default: results/dynamics)")
    p.add_argument("--force", action="store_true", help="recompute cells already saved")
    p.add_argument("--no-figures", action="store_true", help="do not draw figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


CONFIG_FLAGS = ("widths", "batch_sizes", "epochs", "record_every", "lr", "lr_fraction", "seeds", "first_seed",
                "loss", "dtype", "method")


def main(argv=None) -> None:
    args = parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k in CONFIG_FLAGS or k.startswith("model.")}

    def go():
        from studylib import dynamics

        cfg = cli.assemble(dynamics.DynamicsConfig, presets=dynamics.PRESETS,
                           preset=args.preset or dynamics.DEFAULT_PRESET, config_file=args.config, flags=flags)
        summary = dynamics.run(cfg, args.out, force=args.force, progress=not args.no_progress)
        print(dynamics.format_table(summary))
        print(f"\nwrote {args.out}/summary.json, curves.npz, cells/ ({summary['wall_seconds']:.0f} s)")
        if not args.no_figures:
            from studylib import plots_dynamics

            paths = plots_dynamics.dynamics_figures(args.out)
            print("figures: " + ", ".join(str(p) for p in paths))

    cli.main_guard(go)


if __name__ == "__main__":
    main()
