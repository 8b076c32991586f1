import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("MARGINAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("MARGINAL_DATA", str(DATA))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"benchmark data not found at {DATA} (set MARGINAL_DATA)")
    return DATA


@pytest.fixture(scope="session")
def smol_path():
    from marginal.models import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def smol(smol_path):
    """The real bundled model, loaded once per test session."""
    from marginal.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(smol_path, name="smollm2-135m")
    yield b
    b.close()
