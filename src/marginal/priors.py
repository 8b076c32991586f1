"""Choosing priors from a bank, and user banks written in YAML.

A YAML bank is a list of entries (or a mapping with a ``priors:`` list)::

    - name: tutor
      system: You are a patient tutor.
      template: "{question}\\nEnd with 'The answer is N.'"
      fewshot:
        - {question: "1+1?", answer: "The answer is 2."}
      model: smollm2-135m      # optional
      description: a tutor persona   # optional

Every error names the file and the entry. Left out: bank inheritance/merging
and templating beyond the literal ``{question}`` placeholder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import MarginalError, suggest, unknown
from .types import Prior

_KEYS = ("name", "system", "template", "fewshot", "model", "description")


def select_priors(bank: list[Prior], spec: str | int) -> list[Prior]:
    """``8`` / ``"8"``: the first 8 priors in bank order; ``"a,b"``: those priors by name, in that order."""
    names = [p.name for p in bank]
    if isinstance(spec, bool):
        raise MarginalError(f"--priors expects a count or comma-separated names, got {spec!r}")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().lstrip("+").isdigit()):
        k = int(spec)
        if k < 1:
            raise MarginalError(f"--priors must be >= 1, got {k}")
        if k > len(bank):
            raise MarginalError(
                f"--priors {k} asks for more priors than the bank has ({len(bank)}: {', '.join(names)}); "
                "use a smaller K or add priors with --priors-file"
            )
        return list(bank[:k])
    if not isinstance(spec, str):
        raise MarginalError(f"--priors expects a count or comma-separated names, got {spec!r}")
    wanted = [s.strip() for s in spec.split(",")]
    if not wanted or any(not w for w in wanted):
        raise MarginalError(f"--priors expects a count or comma-separated names, got {spec!r}")
    dup = sorted({w for w in wanted if wanted.count(w) > 1})
    if dup:
        raise MarginalError(f"--priors names {', '.join(map(repr, dup))} more than once")
    by_name = {p.name: p for p in bank}
    out = []
    for w in wanted:
        if w not in by_name:
            raise unknown("prior", w, names)
        out.append(by_name[w])
    return out


def _entry_label(path: Path, i: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{path}: entry {i + 1}" + (f" ({name!r})" if isinstance(name, str) else "")


def _str_field(label: str, entry: dict[str, Any], key: str, required: bool = False) -> str | None:
    v = entry.get(key)
    if v is None:
        if required:
            raise MarginalError(f"{label}: missing required key {key!r}")
        return None
    if not isinstance(v, str):
        raise MarginalError(f"{label}: {key!r} must be a string, got {type(v).__name__}")
    return v


def parse_bank(data: Any, path: Path) -> list[Prior]:
    """Priors from already-loaded YAML data (see the module docstring for the shape)."""
    if isinstance(data, dict) and set(data) == {"priors"}:
        data = data["priors"]
    if not isinstance(data, list) or not data:
        raise MarginalError(
            f"{path}: expected a non-empty list of priors (or a mapping with a 'priors:' list), "
            f"got {type(data).__name__ if data is not None else 'an empty file'}"
        )
    out: list[Prior] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(data):
        label = _entry_label(path, i, entry)
        if not isinstance(entry, dict):
            raise MarginalError(f"{label}: expected a mapping with keys {', '.join(_KEYS)}, got {type(entry).__name__}")
        bad = [k for k in entry if k not in _KEYS]
        if bad:
            raise MarginalError(
                f"{label}: unknown key {bad[0]!r}{suggest(str(bad[0]), _KEYS)}; expected: {', '.join(_KEYS)}"
            )
        name = _str_field(label, entry, "name", required=True)
        assert name is not None
        if not name.strip() or name.strip() != name or "," in name:
            raise MarginalError(f"{label}: name must be non-empty, without commas or spaces at the ends, got {name!r}")
        if name in seen:
            raise MarginalError(f"{label}: duplicate prior name {name!r} (first used by entry {seen[name] + 1})")
        seen[name] = i
        template = _str_field(label, entry, "template") or "{question}"
        if "{question}" not in template:
            raise MarginalError(f"{label}: template must contain the placeholder '{{question}}', got {template!r}")
        fewshot_raw = entry.get("fewshot") or []
        if not isinstance(fewshot_raw, list):
            raise MarginalError(
                f"{label}: 'fewshot' must be a list of {{question, answer}} mappings, got {type(fewshot_raw).__name__}"
            )
        shots: list[tuple[str, str]] = []
        for j, s in enumerate(fewshot_raw):
            if not (
                isinstance(s, dict)
                and set(s) == {"question", "answer"}
                and isinstance(s["question"], str)
                and isinstance(s["answer"], str)
            ):
                raise MarginalError(
                    f"{label}: fewshot item {j + 1} must be a mapping with string keys 'question' and 'answer' only, "
                    f"got {s!r}"
                )
            shots.append((s["question"], s["answer"]))
        out.append(
            Prior(
                name=name,
                system=_str_field(label, entry, "system"),
                template=template,
                fewshot=tuple(shots),
                model=_str_field(label, entry, "model"),
                description=_str_field(label, entry, "description") or "",
            )
        )
    return out


def load_bank(path: str | Path) -> list[Prior]:
    """A user bank from a YAML file, validated (unknown key, missing ``{question}``, duplicate name, bad YAML)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MarginalError(f"cannot read priors file {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise MarginalError(f"{where}: bad YAML ({problem}); expected a list of priors") from None
    return parse_bank(data, path)
