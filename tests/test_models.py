import hashlib

import pytest

from marginal import models
from marginal.errors import MarginalError
from marginal.models import CATALOG, ModelEntry, resolve_model


def test_bundled_model_is_found_without_network(smol_path):
    assert smol_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and smol_path.stat().st_size > 50_000_000
    assert resolve_model("smollm2-135m") == smol_path


def test_unknown_and_missing_models_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(MarginalError, match="did you mean 'smollm2-135m'"):
        resolve_model("smollm-135m")
    with pytest.raises(MarginalError, match="model file not found"):
        resolve_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(MarginalError, match="hf:owner/repo/file.gguf"):
        resolve_model("hf:justarepo")
    monkeypatch.setenv("MARGINAL_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_dist_file", lambda dist, member: None)
    with pytest.raises(MarginalError, match=r"pip install 'marginal\[gemma270m\]'"):
        resolve_model("gemma3-270m")


def _fake_parts(tmp_path, monkeypatch, chunks, sha):
    files = {}
    for i, data in enumerate(chunks):
        p = tmp_path / f"part{i}"
        p.write_bytes(data)
        files[(f"d{i}", f"m{i}")] = p
    entry = ModelEntry("fake", "Fake", 1, "pip install fake", parts=tuple(files), sha256=sha)
    monkeypatch.setitem(CATALOG, "fake", entry)
    monkeypatch.setattr(models, "_dist_file", lambda dist, member: files.get((dist, member)))
    monkeypatch.setenv("MARGINAL_CACHE", str(tmp_path / "cache"))


def test_chunked_model_is_assembled_and_checked(tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(range(200)), bytes(1000), b"tail"]
    _fake_parts(tmp_path, monkeypatch, chunks, hashlib.sha256(b"".join(chunks)).hexdigest())
    out = resolve_model("fake")
    assert out.read_bytes() == b"".join(chunks)
    assert resolve_model("fake") == out  # cached


def test_corrupt_chunks_are_refused_and_not_cached(tmp_path, monkeypatch):
    _fake_parts(tmp_path, monkeypatch, [b"abc", b"def"], "0" * 64)
    with pytest.raises(MarginalError, match="expected 0000"):
        resolve_model("fake")
    assert not list((tmp_path / "cache").glob("*"))
