"""Analysis of a stored pool: pure numpy, never generates."""
