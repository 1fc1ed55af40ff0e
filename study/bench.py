"""Benchmark the study's SGD step against this machine's floor and the seed's loop, in one run.

    python -m study.bench                      # full table (~3 min on 2 CPU cores)
    python -m study.bench --preset tiny        # seconds (smoke test)
    python -m study.bench --widths 1000 --batch-sizes 1 --out results/bench
    python -m study.bench --profile-compare [compare flags]   # where a compare run's time goes


Prints a table and writes OUT/bench.json: per-step times after compilation, the ratio to
the in-place BLAS floor and to the machine's bound (weights read twice, or the flops at the
peak matmul rate), the speed-up over a seed-style loop and the largest one possible, a profile
of the width-1000 step, the empirical NTK cost per implementation, and the projected time of
`python -m study.dynamics --preset seed --seeds 1` with the share of it spent on metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

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
    p.add_argument("--profile-compare", action="store_true",
                   help="instead: run `python -m study.compare` with the flags that follow (all of them are "
                        "compare's) and print where its time goes: import, data, per width drawing theta_0, "
                        "kernels at init, training, quadratic model, closed forms, eigendecompositions, each "
                        "with its compile time, summary, figures and writes (a temporary --out unless given)")
    return p.parse_args(argv)


def profile_main(argv: list[str]) -> None:
    """``--profile-compare [compare flags]``: :func:`studylib.bench.profile_compare`, then its report."""

    def go():
        from studylib import bench

        print(bench.format_profile(bench.profile_compare(argv)))

    cli.main_guard(go)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--profile-compare" in argv:
        i = argv.index("--profile-compare")
        if i > 0:
            print(f"error: --profile-compare: must come first (the flags after it are compare's), got "
                  f"{' '.join(argv[:i])} before it; accepted: python -m study.bench --profile-compare [compare flags]",
                  file=sys.stderr)
            raise SystemExit(2)
        profile_main(argv[i + 1:])
        return
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
