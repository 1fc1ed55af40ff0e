"""Finite network vs linearization vs infinite-width closed form, across widths.

    python -m study.compare                  # default sweep (~4 min on 2 CPU cores)
    python -m study.compare --preset tiny    # seconds
    python -m study.compare --widths 64,256,1024 --seeds 5 --steps 2000 --out results/mine
"""

from __future__ import annotations

import argparse

from studylib import cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="default | tiny | large (large is meant for a GPU or a long run)")
    p.add_argument("--config", help="TOML file with config keys (flags override it)")
    p.add_argument("--widths", type=cli.int_list, help="comma-separated hidden widths")
    p.add_argument("--seeds", type=int, help="number of initialisations per width (default: 3)")
    p.add_argument("--first-seed", dest="first_seed", type=int, help="first PRNG seed (default: 0)")
    p.add_argument("--steps", type=int, help="full-batch GD steps (default: 1000)")
    p.add_argument("--lr", type=float, help="absolute learning rate (default: from --lr-fraction)")
    p.add_argument("--lr-fraction", dest="lr_fraction", type=float,
                   help="learning rate as a fraction of 2N/lambda_max of the analytic NTK (default: 0.5)")
    p.add_argument("--checkpoints", dest="n_checkpoints", type=int, help="number of log-spaced checkpoints")
    p.add_argument("--ntk-implementation", dest="ntk_implementation", type=int, help="1 or 2 (default: 2)")
    p.add_argument("--lin-mode", dest="lin_mode",
                   help="function (default: exact function-space GD) or params (train nt.linearize)")
    p.add_argument("--dtype", help="float32 (default) or float64")
    cli.add_model_flags(p)
    cli.add_data_flags(p)
    p.add_argument("--out", default="results/compare", help="output folder (default: results/compare)")
    p.add_argument("--plan", action="store_true",
                   help="print devices, parameters and memory per seed for each width, then exit")
    p.add_argument("--force", action="store_true", help="recompute widths whose stored results match the config")
    p.add_argument("--no-figures", action="store_true", help="do not draw figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


CONFIG_FLAGS = ("widths", "seeds", "first_seed", "steps", "lr", "lr_fraction", "n_checkpoints",
                "ntk_implementation", "lin_mode", "dtype")


def main(argv=None) -> None:
    args = parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k in CONFIG_FLAGS or k.startswith(("model.", "data."))}

    def go():
        from studylib import compare

        cfg = cli.assemble(compare.CompareConfig, presets=compare.PRESETS, preset=args.preset,
                           config_file=args.config, flags=flags)
        if args.plan:
            from studylib import devices

            print(f"devices: {devices.describe()}; memory per device {devices.memory_bytes() / 2**30:.1f} GiB")
            for w in cfg.widths:
                plan = compare.memory_plan(cfg, w)
                print(f"width {w:>6}: {plan['params']:>12,} parameters, {plan['bytes_per_seed'] / 2**20:>8.1f} MiB "
                      f"per seed (+{plan['fixed_bytes'] / 2**20:.0f} MiB once), {plan['seeds_per_chunk']} of "
                      f"{cfg.seeds} seeds at a time")
            return
        summary = compare.run(cfg, args.out, progress=not args.no_progress, force=args.force)
        print(compare.format_table(summary_from_disk(args.out)))
        print(f"\nwrote {args.out}/summary.json, curves.npz ({summary['wall_seconds']:.0f} s)")
        if not args.no_figures:
            from studylib import plots

            paths = plots.compare_figures(args.out)
            print("figures: " + ", ".join(str(p) for p in paths))

    cli.main_guard(go)


def summary_from_disk(out):
    from studylib.results import read_json

    return read_json(f"{out}/summary.json")


if __name__ == "__main__":
    main()
