"""CONTRACT.md's MovieLens protocol through the CLI: now a shortcut to benchmarks/contract_eval.py.

    python benchmarks/contract_movielens.py [--config experiments/NAME.toml] [--origins 0.8]
                                            [--origins 0.6 0.7 0.8 0.9]   # rolling origin
                                            [--work bench_out/contract] [--set KEY=VALUE]

The same as `python benchmarks/contract_eval.py --datasets movielens --peers popularity ...`
(the protocol lives there, with every peer: pass `--peers ...` or any other contract_eval option
after these). Engine and popularity on the same split, per origin and pooled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contract_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None)
    parser.add_argument("--origins", type=float, nargs="+", default=[0.8])
    parser.add_argument("--work", type=Path, default=Path("bench_out/contract"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args, rest = parser.parse_known_args()
    argv = ["--datasets", "movielens", "--origins", *map(str, args.origins), "--out", str(args.work)]
    argv += ["--config", args.config] if args.config else []
    argv += [a for o in args.overrides for a in ("--set", o)]
    contract_eval.main(argv + (rest if "--peers" in rest else ["--peers", "popularity", *rest]))


if __name__ == "__main__":
    main()
