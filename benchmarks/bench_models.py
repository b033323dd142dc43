"""Network speed, memory, parameters and FLOPs: the same measurement as ``mfdepth bench``.

    python benchmarks/bench_models.py --threads 2 --runs 10

Writes benchmarks/results/bench.json and bench.md.
"""

import argparse

from mfdepth.bench import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
