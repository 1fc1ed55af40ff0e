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
import dataclasses

from studylib import cli


def parse_args(argv=None) -> argparse.Namespace:
    from studylib import bench

    p = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help=f"{' | '.join(bench.PRESETS)} (default: default)")
    p.add_argument("--config", help="TOML file with config keys (flags override it)")
    cli.add_config_flags(p, bench.BenchConfig, dataclasses.asdict(bench.BenchConfig()))
    p.add_argument("--out", default="results/bench", help="output folder (default: results/bench)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)

    def go():
        from studylib import bench

        flags = {k: v for k, v in vars(args).items() if k in cli.config_dests(bench.BenchConfig)}
        cfg = cli.assemble(bench.BenchConfig, presets=bench.PRESETS, preset=args.preset, config_file=args.config,
                           flags=flags)
        res = bench.run(cfg, args.out, progress=not args.no_progress)
        print(bench.format_table(res))
        print(f"\nwrote {args.out}/bench.json")

    cli.main_guard(go)


if __name__ == "__main__":
    main()
