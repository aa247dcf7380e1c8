"""SPEC §7, by mutation: hundreds of seeded operator slips, each reloaded into one real server and checked.

For each slip: the reload reports exactly the errors `check` finds; while there are
errors, every name answers over UDP as it did before (its zone's last good version);
a valid edit loses no zone. Then the files go back and the next slip comes. A failure
prints the seed and the slip, and `bench/zone_mutations.py --seed N` replays it.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from tests.mutations import Snapshot, mutate
from tests.serverproc import DATA, running
from tests.zoneedits import SETS, MutationRun

SEED = 2117
PER_SET = {"multi-zones": 300, "zones": 150, "geo-zones": 100}
CLI_EVERY = 60  # one slip in so many also goes through the real `geolb check`


def test_slips_never_take_a_zone_off_the_air(tmp_path: Path) -> None:
    work = tmp_path / "zones"
    SETS["multi-zones"].copy(tmp_path)
    (tmp_path / "multi-zones").rename(work)
    kinds: Counter[str] = Counter()
    with running(work, "--watch-interval", "0", geoip=DATA / "GeoIP2-City-Test.mmdb") as server:
        run = MutationRun(server, work)
        for name, count in PER_SET.items():
            run.load(SETS[name])
            snapshot = Snapshot(work)
            rng = random.Random(f"{SEED}/{name}")
            for index in range(count):
                outcome = run.try_one(rng, mutate, snapshot, with_cli=index % CLI_EVERY == 0)
                replay = f"seed {SEED}, set {name}, mutation {index}: {outcome.kind}: {outcome.detail}"
                assert outcome.agreed, f"{replay}: {outcome.why}"
                assert not outcome.changed, f"{replay}: errors {outcome.errors}; changed: {outcome.changed}"
                kinds[outcome.kind] += 1
    assert sum(kinds.values()) >= 500
    assert len(kinds) >= 12, kinds  # every kind of slip was tried
