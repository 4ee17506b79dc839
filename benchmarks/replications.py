"""Run the full versions of the replication claims and write their pages.

    python benchmarks/replications.py                       # every claim -> docs/replications/
    python benchmarks/replications.py neural-collapse       # some claims
    python benchmarks/replications.py --quick --out /tmp/q  # smoke run (the CI versions)

Each claim writes NAME.md (statement, protocol, numbers beside the paper's, checks, figure,
analysis, rerun command), NAME.png and NAME.json; README.md indexes the pages present.
Records the machine, thread count and date in the index.
"""

from __future__ import annotations

import argparse
import os
import platform
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from repscope.replicate import all_claims, read_result, run_claim, write_index, write_page

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="claims to run (default: all)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "replications")
    args = ap.parse_args()
    claims = all_claims()
    names = args.names or list(claims)
    print(f"# replications, {date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    for name in names:
        res = run_claim(claims[name], "quick" if args.quick else "full")
        write_page(claims[name], res, args.out)
        print(f"{name}: {res.verdict} in {res.seconds:.0f} s", flush=True)
    present = [c for c in claims.values() if (args.out / f"{c.name}.json").is_file()]
    write_index(present, [read_result(args.out / f"{c.name}.json") for c in present], args.out)


if __name__ == "__main__":
    main()
