"""SQLite sample pool: one row per sample, resumable, crash-safe.

Layout (one file may hold several runs):

- ``runs(run_id, config, created, code_version)``: ``config`` is canonical
  JSON of everything that decides the samples (task, model, priors, spec,
  problems); a run's id is a hash of it.
- ``problems(run_id, position, problem_id, question, reference)``: the run's
  problems in order. For problems whose ``meta["redact"]`` is set (GPQA,
  whose rows must never be written in plain text) the question is left
  empty and sample texts, which may quote it, are stored zlib-compressed
  (``samples()`` returns them decoded).
- ``priors(run_id, position, name, spec)``: the run's bank, in order.
- ``decisions(run_id, problem_id, used, requests, reason, detail)``: a
  policy's steps, keyed by the samples used when it decided (a replay after
  a resume finds the same keys and adds nothing); ``detail`` is the
  decision's typed fields as JSON (``Decision.record``), NULL in files
  written before they were stored (the column is added on open).
- ``samples(run_id, problem_id, prior, idx, ...)``: unique on
  (run_id, problem_id, prior, idx). ``answer`` is the canonical answer (NULL
  when extraction failed, with ``error`` saying why); ``correct`` is 1/0, or
  NULL without a reference or for a failed sample. Every column after the
  core ones is a per-sample diagnostic (``Sample.diagnostics``, e.g. a
  blend's interventions), added the first time a sample carries that name
  and NULL for samples without it; the store knows no diagnostic by name
  (files from before this had the five of blending as such columns).

Writes are batched transactions in WAL mode, so a killed process loses at
most the batch in flight and readers never block the writer. Inserts use
``INSERT OR IGNORE``: a sample is never duplicated or overwritten. Analyses
read through the query methods (``samples``, ``answers``, ...) and never
write SQL. Left out: concurrent writers from several processes (one driver
writes).
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, NamedTuple

from .errors import MarginalError
from .types import Prior, Problem, Sample

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created REAL NOT NULL,
    code_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS problems (
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    problem_id TEXT NOT NULL,
    question TEXT NOT NULL,
    reference TEXT,
    redacted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, problem_id)
);
CREATE TABLE IF NOT EXISTS priors (
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS decisions (
    run_id TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    used INTEGER NOT NULL,
    requests TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT,
    PRIMARY KEY (run_id, problem_id, used)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    prior TEXT NOT NULL,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    answer TEXT,
    correct INTEGER,
    error TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    logprob REAL NOT NULL,
    finish_reason TEXT NOT NULL,
    seed INTEGER NOT NULL,
    seconds REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, problem_id, prior, idx)
);
"""

SAMPLE_COLUMNS = [f.name for f in fields(Sample) if f.name != "diagnostics"]
"""A sample's own fields, as exports write them (its diagnostics follow, one column each)."""
_DB_COLUMNS = ["problem_id", "prior", "idx", *SAMPLE_COLUMNS[3:]]
_INSERT_COLUMNS = ["run_id", *_DB_COLUMNS, "created"]
_CORE = frozenset(_INSERT_COLUMNS)
_DIAGNOSTIC_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


class AnswerRow(NamedTuple):
    """One sample's answer and grade (what vote analyses read)."""

    problem_id: str
    prior: str
    idx: int
    """The sample's index (``Sample.index``; a field ``index`` would shadow ``tuple.index``)."""
    answer: str | None
    correct: bool | None


DECISION_COLUMNS = ("run_id", "problem_id", "used", "requests", "reason", "detail")

_ZPREFIX = "zlib:"


def _encode(text: str) -> str:
    return _ZPREFIX + base64.b64encode(zlib.compress(text.encode("utf-8"))).decode("ascii")


def _decode(text: str) -> str:
    if text.startswith(_ZPREFIX):
        return zlib.decompress(base64.b64decode(text[len(_ZPREFIX) :])).decode("utf-8")
    return text


def _row_to_sample(row: Sequence[Any], decode: bool, diagnostics: Sequence[str]) -> Sample:
    n = len(_DB_COLUMNS)
    d = dict(zip(_DB_COLUMNS, row[:n]))
    if decode:
        d["text"] = _decode(d["text"])
    d["index"] = d.pop("idx")
    if d["correct"] is not None:
        d["correct"] = bool(d["correct"])
    d["diagnostics"] = {k: v for k, v in zip(diagnostics, row[n:]) if v is not None}
    return Sample(**d)


def _check_diagnostic(name: object) -> str:
    if not (isinstance(name, str) and _DIAGNOSTIC_NAME.match(name)) or name in _CORE:
        raise ValueError(f"a sample diagnostic needs a lower-case identifier that is not a sample column, got {name!r}")
    return name


class Store:
    """A sample pool in one SQLite file."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise MarginalError(f"no such run database: {self.path}")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if readonly:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            else:
                self.db = sqlite3.connect(self.path, timeout=30)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
                self._add_decision_detail()
            self.db.execute("SELECT count(*) FROM runs").fetchone()
            ordered = [r[1] for r in self.db.execute("PRAGMA table_info(samples)")]
            self.columns = set(ordered)
            self._diagnostics = [c for c in ordered if c not in _CORE]
        except sqlite3.DatabaseError as e:
            raise MarginalError(f"{self.path} is not a marginal run database ({e})") from None

    # -- runs ---------------------------------------------------------------
    def runs(self) -> list[tuple[str, dict]]:
        rows = self.db.execute("SELECT run_id, config FROM runs ORDER BY created").fetchall()
        return [(r, json.loads(c)) for r, c in rows]

    def run_config(self, run_id: str) -> dict:
        row = self.db.execute("SELECT config FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise MarginalError(f"{self.path} holds no run {run_id!r}")
        return json.loads(row[0])

    def only_run(self) -> str:
        """The id of the single run in this file (an error if there are none or several)."""
        runs = self.runs()
        if not runs:
            raise MarginalError(f"{self.path} holds no run yet")
        if len(runs) > 1:
            ids = ", ".join(r for r, _ in runs)
            raise MarginalError(f"{self.path} holds {len(runs)} runs ({ids}); name one with --run")
        return runs[0][0]

    def create_run(
        self, run_id: str, config: dict, problems: Sequence[Problem], priors: Sequence[Prior], code_version: str
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?,?,?,?)",
                (run_id, json.dumps(config, sort_keys=True), time.time(), code_version),
            )
            db.executemany(
                "INSERT OR IGNORE INTO problems VALUES (?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        i,
                        p.id,
                        "" if p.meta.get("redact") else p.question,
                        p.answer,
                        int(bool(p.meta.get("redact"))),
                    )
                    for i, p in enumerate(problems)
                ],
            )
            db.executemany(
                "INSERT OR IGNORE INTO priors VALUES (?,?,?,?)",
                [(run_id, i, c.name, json.dumps(asdict(c))) for i, c in enumerate(priors)],
            )

    def add_problems(self, run_id: str, problems: Sequence[Problem]) -> None:
        """Append problems to a run after the ones it holds (a server adds each request's question
        as it comes); a problem id the run already holds is kept as it was."""
        with self.transaction() as db:
            (start,) = db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM problems WHERE run_id=?", (run_id,))
            db.executemany(
                "INSERT OR IGNORE INTO problems VALUES (?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        start[0] + i,
                        p.id,
                        "" if p.meta.get("redact") else p.question,
                        p.answer,
                        int(bool(p.meta.get("redact"))),
                    )
                    for i, p in enumerate(problems)
                ],
            )

    def problems(self, run_id: str) -> list[Problem]:
        rows = self.db.execute(
            "SELECT problem_id, question, reference FROM problems WHERE run_id=? ORDER BY position", (run_id,)
        ).fetchall()
        return [Problem(id=i, question=q, answer=a) for i, q, a in rows]

    def priors(self, run_id: str) -> list[Prior]:
        rows = self.db.execute("SELECT spec FROM priors WHERE run_id=? ORDER BY position", (run_id,)).fetchall()
        out = []
        for (spec,) in rows:
            d = json.loads(spec)
            d["fewshot"] = tuple(tuple(x) for x in d.get("fewshot", ()))
            out.append(Prior(**d))
        return out

    # -- samples ------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with self.db:
                yield self.db
        except sqlite3.OperationalError as e:
            raise MarginalError(f"cannot write {self.path}: {e}") from None

    def _redacted(self, run_id: str) -> set[str]:
        rows = self.db.execute("SELECT problem_id FROM problems WHERE run_id=? AND redacted=1", (run_id,))
        return {r[0] for r in rows}

    def add_samples(
        self, run_id: str, samples: Iterable[Sample], decisions: Iterable[tuple[str, int, str, str, str]] = ()
    ) -> int:
        """Store samples (and policy decisions: problem id, used, requests JSON,
        reason, detail JSON) in one transaction; returns how many samples were new."""
        now = time.time()
        redacted = self._redacted(run_id)
        samples = list(samples)
        names = list(dict.fromkeys(k for s in samples for k in s.diagnostics))
        rows = [
            (
                run_id,
                s.problem_id,
                s.prior,
                s.index,
                _encode(s.text) if s.problem_id in redacted else s.text,
                s.answer,
                None if s.correct is None else int(s.correct),
                s.error,
                s.prompt_tokens,
                s.completion_tokens,
                s.cached_prompt_tokens,
                s.logprob,
                s.finish_reason,
                s.seed,
                s.seconds,
                now,
                *(s.diagnostics.get(k) for k in names),
            )
            for s in samples
        ]
        columns = ", ".join([*_INSERT_COLUMNS, *(f'"{k}"' for k in names)])
        with self.transaction() as db:
            self._add_diagnostics(names)
            before = db.total_changes
            db.executemany(
                f"INSERT OR IGNORE INTO samples ({columns}) "
                f"VALUES ({','.join('?' * (len(_INSERT_COLUMNS) + len(names)))})",
                rows,
            )
            added = db.total_changes - before
            db.executemany(
                f"INSERT OR IGNORE INTO decisions ({', '.join(DECISION_COLUMNS)}) VALUES (?,?,?,?,?,?)",
                [(run_id, *d) for d in decisions],
            )
            return added

    def _add_decision_detail(self) -> None:
        """Add the ``detail`` column to a decisions table written before typed decisions were stored."""
        if "detail" not in {r[1] for r in self.db.execute("PRAGMA table_info(decisions)")}:
            self.db.execute("ALTER TABLE decisions ADD COLUMN detail TEXT")

    def decisions(self, run_id: str) -> list[tuple[str, int, list, str, str | None]]:
        """(problem id, samples used, requests, reason, detail JSON or None) for each logged policy step."""
        have = {r[1] for r in self.db.execute("PRAGMA table_info(decisions)")}
        detail = "detail" if "detail" in have else "NULL AS detail"  # a read-only older file
        rows = self.db.execute(
            f"SELECT problem_id, used, requests, reason, {detail} FROM decisions WHERE run_id=? "
            "ORDER BY problem_id, used",
            (run_id,),
        ).fetchall()
        return [(p, u, json.loads(r), why, d) for p, u, r, why, d in rows]

    def _add_diagnostics(self, names: Iterable[str]) -> None:
        """A column for each diagnostic name this file does not store yet."""
        for name in map(_check_diagnostic, names):
            if name not in self.columns:
                self.db.execute(f'ALTER TABLE samples ADD COLUMN "{name}"')
                self.columns.add(name)
                self._diagnostics.append(name)

    def diagnostic_names(self) -> tuple[str, ...]:
        """The per-sample diagnostics this file stores (``Sample.diagnostics`` names), in column order."""
        return tuple(self._diagnostics)

    def samples(self, run_id: str, *, decode: bool = True) -> list[Sample]:
        """The run's samples with their diagnostics; ``decode=False`` keeps redacted texts compressed (for export)."""
        cols = [c if c in self.columns else f"NULL AS {c}" for c in _DB_COLUMNS]  # a read-only older file
        cols += [f'"{c}"' for c in self._diagnostics]
        rows = self.db.execute(
            f"SELECT {', '.join(cols)} FROM samples WHERE run_id=? ORDER BY problem_id, prior, idx",
            (run_id,),
        ).fetchall()
        return [_row_to_sample(r, decode, self._diagnostics) for r in rows]

    def answers(self, run_id: str) -> list[AnswerRow]:
        """Each sample's answer and grade, ordered by problem id, prior and index (no texts read)."""
        rows = self.db.execute(
            "SELECT problem_id, prior, idx, answer, correct FROM samples WHERE run_id=? "
            "ORDER BY problem_id, prior, idx",
            (run_id,),
        ).fetchall()
        return [AnswerRow(p, c, i, a, None if g is None else bool(g)) for p, c, i, a, g in rows]

    def done_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        rows = self.db.execute("SELECT problem_id, prior, idx FROM samples WHERE run_id=?", (run_id,))
        return set(rows)

    def count(self, run_id: str) -> int:
        return self.db.execute("SELECT count(*) FROM samples WHERE run_id=?", (run_id,)).fetchone()[0]

    def export(self, run_id: str, out: str | Path) -> Path:
        """Write the run's samples as JSONL (``.jsonl``) or Parquet (``.parquet``), one field per
        sample field and per diagnostic the file stores (None where a sample has none);
        redacted texts stay compressed."""
        out = Path(out)
        samples = self.samples(run_id, decode=False)
        names = self.diagnostic_names()

        def row(s: Sample) -> dict[str, Any]:  # a sample's fields, then one entry per diagnostic of the file
            return {**{c: getattr(s, c) for c in SAMPLE_COLUMNS}, **{k: s.diagnostics.get(k) for k in names}}

        if out.suffix == ".jsonl":
            with open(out, "w", encoding="utf-8") as f:
                for s in samples:
                    f.write(json.dumps({"run_id": run_id, **row(s)}) + "\n")
        elif out.suffix == ".parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise MarginalError("Parquet export needs pyarrow: pip install 'marginal[parquet]'") from None
            rows = [row(s) for s in samples]
            cols = {c: [r[c] for r in rows] for c in [*SAMPLE_COLUMNS, *names]}
            pq.write_table(pa.table({"run_id": [run_id] * len(samples), **cols}), out)
        else:
            raise MarginalError(f"export path must end in .jsonl or .parquet, got {out.name!r}")
        return out

    def close(self) -> None:
        self.db.close()

    # -- summaries (used by the CLI) ------------------------------------------
    def sample_slots(self, run_id: str) -> int:
        """Samples per (problem, prior) the run has room for: its largest sample index + 1 (0 without samples)."""
        row = self.db.execute("SELECT max(idx) FROM samples WHERE run_id=?", (run_id,)).fetchone()
        return 0 if row[0] is None else row[0] + 1

    def prior_counts(self, run_id: str) -> dict[str, tuple[int, int, int, int]]:
        """Per prior name: (samples, failed samples, correct samples, graded samples).

        Priors without samples are absent.
        """
        rows = self.db.execute(
            "SELECT prior, count(*), sum(answer IS NULL), sum(correct), count(correct) FROM samples "
            "WHERE run_id=? GROUP BY prior",
            (run_id,),
        ).fetchall()
        return {name: (n, failed or 0, right or 0, graded) for name, n, failed, right, graded in rows}
