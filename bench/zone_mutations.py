"""Zone mutations at scale (run by hand, not a test): the slips of tests/blackbox/test_zone_mutations.py, many more.

Each slip is made in the zones directory of one running geolb, reloaded through
POST /v1/reload and compared with `check` (the function `geolb check` calls); then
every probe name is asked over UDP. Prints how many slips of each kind ran, how
many had errors, and how many lost a zone or changed an answer (must be 0), or
made the reload and `check` disagree (must be 0).

    .venv/bin/python bench/zone_mutations.py --count 5000 --seed 7 [--sets multi-zones zones geo-zones] [--cli-every 200]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.mutations import MUTATIONS, Snapshot, mutate  # noqa: E402
from tests.serverproc import DATA, running  # noqa: E402
from tests.zoneedits import CLIENTS, SETS, MutationRun  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="slips in all, shared among the sets (default 5000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--cli-every", type=int, default=200, help="one slip in so many also goes through `geolb check` (0: none)")
    parser.add_argument("--all-clients", action="store_true", help="ask each name from every test client, not two")
    args = parser.parse_args()

    ran: Counter[str] = Counter()
    with_errors: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    disagreed: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "zones"
        SETS[args.sets[0]].copy(Path(tmp)).rename(work)
        with running(work, "--watch-interval", "0", geoip=DATA / "GeoIP2-City-Test.mmdb") as server:
            run = MutationRun(server, work, CLIENTS if args.all_clients else (None, "81.2.69.142/32"))
            for n, name in enumerate(args.sets):
                count = args.count // len(args.sets) + (1 if n < args.count % len(args.sets) else 0)
                run.load(SETS[name])
                snapshot = Snapshot(work)
                rng = random.Random(f"{args.seed}/{name}")
                for index in range(count):
                    cli = bool(args.cli_every) and index % args.cli_every == 0
                    outcome = run.try_one(rng, mutate, snapshot, with_cli=cli)
                    ran[outcome.kind] += 1
                    with_errors[outcome.kind] += bool(outcome.errors)
                    where = f"seed {args.seed}, set {name}, mutation {index}: {outcome.kind}: {outcome.detail}"
                    if outcome.changed:
                        lost[outcome.kind] += 1
                        failures.append(f"{where}: {outcome.changed[:3]}")
                    if not outcome.agreed:
                        disagreed[outcome.kind] += 1
                        failures.append(f"{where}: {outcome.why}")
    elapsed = time.monotonic() - started
    print(f"{sum(ran.values())} mutations over {', '.join(args.sets)}, seed {args.seed}, in {elapsed:.1f} s")
    print(f"{'kind':16} {'ran':>6} {'errors':>7} {'lost':>5} {'disagreed':>9}")
    for kind in MUTATIONS:
        print(f"{kind:16} {ran[kind]:6} {with_errors[kind]:7} {lost[kind]:5} {disagreed[kind]:9}")
    print(f"{'total':16} {sum(ran.values()):6} {sum(with_errors.values()):7} {sum(lost.values()):5} {sum(disagreed.values()):9}")
    for line in failures[:20]:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
