"""Replay on a pool still being generated: unsampled problems are left out, not scored 0."""

from marginal.policies import Fixed
from marginal.replay import replay
from marginal.store import Store
from marginal.types import Prior, Problem, Sample


def test_replay_leaves_out_problems_with_no_sample_yet(tmp_path):
    s = Store(tmp_path / "r.db")
    s.create_run("r", {}, [Problem(f"p{i}", "q", "1") for i in range(4)], [Prior("a"), Prior("b")], "0")
    rows = [Sample(p, c, i, "1", "1", True, None) for p in ("p0", "p2") for c in ("a", "b") for i in range(2)]
    s.add_samples("r", rows)
    s.close()
    r = replay(tmp_path / "r.db", Fixed(2, 2), 4)
    assert r.credit == (1.0, 1.0) and r.used == (4, 4)
    assert r.accuracy == 1.0 and r.exhausted == 0 and r.mean_used == 4.0
