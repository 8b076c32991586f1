"""Summarize experiments/blend/*.db (rows of `marginal blend`) into summary.json.

Per (base, guide, variant, config): problems, accuracy, intervention rate
(interventions / emitted tokens), mean alpha and top-k overlap over the
completions that had interventions, and the share of completions cut at
max_tokens. Also the Pearson correlation between intervention rate and
accuracy across the blended settings (meaningless with few settings; printed
with their count).

    python experiments/blend/summarize.py [DB ...]
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def main() -> None:
    dbs = [Path(p) for p in sys.argv[1:]] or sorted(HERE.glob("*.db"))
    rows = []
    for db in dbs:
        con = sqlite3.connect(db)
        q = ("SELECT base, guide, variant, config, task, max_tokens, COUNT(*), AVG(correct), SUM(interventions), "
             "SUM(steps), AVG(mean_alpha), AVG(topk_overlap), AVG(finish_reason = 'length'), SUM(seconds) "
             "FROM blend_samples GROUP BY base, guide, variant, config, task, max_tokens ORDER BY base, guide, variant")
        for b, g, v, cfg, task, mt, n, acc, inter, steps, ma, ov, cut, secs in con.execute(q):
            rows.append({
                "db": db.name, "task": task, "base": b, "guide": g, "variant": v, "config": json.loads(cfg),
                "max_tokens": mt, "problems": n, "accuracy": acc, "intervention_rate": inter / steps if steps else 0.0,
                "mean_alpha": ma, "topk_overlap": ov, "cut_at_max_tokens": cut, "seconds": secs,
            })
    blended = [r for r in rows if r["config"]["solo"] is None]
    corr = None
    if len(blended) >= 3:
        x = np.array([r["intervention_rate"] for r in blended])
        y = np.array([r["accuracy"] for r in blended])
        if x.std() > 0 and y.std() > 0:
            corr = float(np.corrcoef(x, y)[0, 1])
    out = {"rows": rows, "corr_intervention_accuracy": corr, "corr_settings": len(blended)}
    (HERE / "summary.json").write_text(json.dumps(out, indent=2))
    print(f"{'base':<20}{'guide':<20}{'variant':<11}{'n':>3}{'acc':>7}{'interv':>8}{'alpha':>7}{'overlap':>8}{'cut':>6}")
    for r in rows:
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{r['base']:<20}{r['guide']:<20}{r['variant']:<11}{r['problems']:>3}{f(r['accuracy']):>7}"
              f"{f(r['intervention_rate']):>8}{f(r['mean_alpha']):>7}{f(r['topk_overlap']):>8}{f(r['cut_at_max_tokens']):>6}")
    print(f"corr(intervention rate, accuracy) over {len(blended)} blended settings: {corr}")


if __name__ == "__main__":
    main()
