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
    ap.add_argument("--index-only", action="store_true", help="Only rewrite README.md.")
    args = ap.parse_args()
    if args.index_only:
        args.names = ["-"]
    claims = all_claims()
    names = args.names or list(claims)
    print(f"# replications, {date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    for name in [n for n in names if n != "-"]:
        res = run_claim(claims[name], "quick" if args.quick else "full")
        write_page(claims[name], res, args.out)
        print(f"{name}: {res.verdict} in {res.seconds:.0f} s", flush=True)
    present = [c for c in claims.values() if (args.out / f"{c.name}.json").is_file()]
    note = ("Runtimes are wall seconds of one process (OMP_NUM_THREADS=1) on a shared 2-core "
            "x86_64 VM; the 2026-12-03 runs shared it with many other jobs (load ~20), the "
            "2026-12-04 runs with two to three other processes, so their wall times are larger "
            "than their CPU times.")
    write_index(present, [read_result(args.out / f"{c.name}.json") for c in present], args.out,
                note=note)


if __name__ == "__main__":
    main()
