"""The CLI package: its layout (no cycle, no private imports), help read from the name
tables, and bad input that used to crash or misreport (no model needed)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "src" / "marginal" / "cli"
BLEND_POOL = ROOT / "experiments" / "blend" / "pools" / "gsm8k.db"
DEMO = ROOT / "src" / "marginal" / "data" / "demo.jsonl"


def marginal(*args):
    return subprocess.run(
        [sys.executable, "-m", "marginal", *map(str, args)],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", **__import__("os").environ},
    )


def bad(*args) -> str:
    """Exit code 2 and one line on stderr (no traceback); the line."""
    r = marginal(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.startswith("error:"), r.stderr
    return " ".join(r.stderr.split())


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]


def test_command_modules_import_neither_the_app_nor_private_names():
    for path in sorted(CLI.glob("*.py")):
        for level, module, names in _imports(path):
            assert not any(n.startswith("_") for n in names), (path.name, module, names)
            if path.name not in ("__init__.py", "app.py"):
                assert not (level == 1 and module in ("", "app")), (path.name, module, names)


def test_every_command_is_registered_and_help_lists_the_tables():
    from marginal.cli import app
    from marginal.cli.app import COMMANDS
    from marginal.cli.common import names

    assert [c.name for c in app.registered_commands] == [n for n, _ in COMMANDS]
    runner = CliRunner()
    for cmd, kinds in (
        ("run", ("task", "grader", "policy")),
        ("priors", ("task", "grader")),
        ("blend", ("task",)),
        ("ask", ("policy",)),
        ("serve", ("task", "grader")),
    ):
        r = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "300"}, terminal_width=300)
        assert r.exit_code == 0, r.output
        for kind in kinds:
            for name in names(kind):
                assert name in r.output, (cmd, kind, name)


def test_print_error_keeps_brackets(capsys):
    from marginal.cli.common import print_error

    print_error("--ray needs Ray, which is not installed: pip install 'marginal[ray]'")
    assert capsys.readouterr().err == "error: --ray needs Ray, which is not installed: pip install 'marginal[ray]'\n"


def test_errors_print_user_text_as_is(tmp_path):
    missing = tmp_path / "runs[old]" / "pool[bold].db"
    assert f"no such run database: {missing}" in bad("analyze", missing)


def test_ask_refuses_an_empty_question():
    for q in ("", "   "):
        msg = bad("ask", q, "--task", f"jsonl:{DEMO}")
        assert "question is empty" in msg


@pytest.mark.skipif(not BLEND_POOL.exists(), reason="the stored blend pool is not in this checkout")
def test_save_plan_on_runs_side_by_side_says_why_it_cannot(tmp_path):
    plan = tmp_path / "p.json"
    msg = bad("analyze", BLEND_POOL, "--save-plan", plan)
    assert "--save-plan needs one run" in msg and "side by side" in msg and "--run RUN_ID" in msg
    assert not plan.exists()


def test_save_plan_needs_two_labelled_problems(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_report import build_run

    db = build_run(tmp_path / "one.db", n_problems=1)
    msg = bad("analyze", db, "--save-plan", tmp_path / "p.json")
    assert "needs at least 2 problems with a reference answer" in msg and "has 1" in msg
