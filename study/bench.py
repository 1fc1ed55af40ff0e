"""Benchmark the study's SGD step against this machine's floor and the seed's loop, in one run.

    python -m study.bench                      # full table (~3 min on 2 CPU cores)
    python -m study.bench --preset tiny        # seconds (smoke test)
    python -m study.bench --widths 1000 --batch-sizes 1 --out results/bench

Prints a table and writes OUT/bench.json: per-step times after compilation, the ratio to
the in-place BLAS floor and to the machine's bound (weights read twice, or the flops at the
peak matmul rate), the speed-up over a seed-style loop and the largest one possible, a profile
of the width-1000 step, the empirical NTK cost per implementation, and the projected time of
`python -m study.dynamics --preset seed --seeds 1` with the share of it spent on metrics.
"""

from __future__ import annotations

import argparse

from studylib import cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="default | tiny")
    p.add_argument("--config", help="TOML file with config keys (flags override it)")
    p.add_argument("--widths", type=cli.int_list, help="widths for the step timings (default: 10,100,1000,4096)")
    p.add_argument("--batch-sizes", dest="batch_sizes", type=cli.int_list, help="default: 1,5,10")
    p.add_argument("--floor-width", dest="floor_width", type=int, help="width of the BLAS floor (default: 1000)")
    p.add_argument("--ntk-widths", dest="ntk_widths", type=cli.int_list, help="default: 10,100,1000")
    p.add_argument("--seed-style-widths", dest="seed_style_widths", type=cli.int_list, help="default: 10,100,1000")
    p.add_argument("--seed-style-steps", dest="seed_style_steps", type=int, help="default: 300")
    p.add_argument("--repeats", type=int, help="repetitions per timing, median reported (default: 3)")
    p.add_argument("--out", default="results/bench", help="output folder (default: results/bench)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


CONFIG_FLAGS = ("widths", "batch_sizes", "floor_width", "ntk_widths", "seed_style_widths", "seed_style_steps",
                "repeats")


def main(argv=None) -> None:
    args = parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k in CONFIG_FLAGS}

    def go():
        from studylib import bench

        cfg = cli.assemble(bench.BenchConfig, presets=bench.PRESETS, preset=args.preset, config_file=args.config,
                           flags=flags)
        res = bench.run(cfg, args.out, progress=not args.no_progress)
        print(bench.format_table(res))
        print(f"\nwrote {args.out}/bench.json")

    cli.main_guard(go)


if __name__ == "__main__":
    main()
