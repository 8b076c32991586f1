"""Sandbox escapes: each ends as a failed result with the right reason, within the timeout,
and leaves this process and files outside the sandbox intact."""

import os
import time

import pytest

from marginal.sandbox import Limits, run_many, run_python

LIM = Limits(timeout=3.0)
SLACK = 1.5  # seconds for start-up and clean-up beyond the timeout


@pytest.fixture
def outside(tmp_path):
    store = tmp_path / "store.db"
    store.write_bytes(b"precious")
    return store


ESCAPES = [
    ("infinite loop", "while True:\n    pass", "timeout", "timeout"),
    ("sleep forever", "import time\ntime.sleep(1000)", "timeout", "timeout"),
    ("fork bomb", "import os\nwhile True:\n    os.fork()", "forbidden", "forbidden: os.fork"),
    (
        "fork bomb, errors swallowed",
        "import os\nfor _ in range(1000):\n    try:\n        os.fork()\n    except Exception:\n        pass",
        "forbidden",
        "forbidden: os.fork",
    ),
    (
        "fork via multiprocessing",
        "import multiprocessing as mp\nmp.Process(target=print).start()",
        "forbidden",
        "forbidden: os.fork",
    ),
    ("fork via subprocess", "import subprocess\nsubprocess.run(['true'])", "forbidden", "forbidden: subprocess.Popen"),
    ("raw fork primitive", "import _posixsubprocess", "forbidden", "forbidden: import _posixsubprocess"),
    # bytes(n) is calloc'd, so the loop hits the address-space limit without writing 1 GB of pages
    # (bytearray zero-fills each chunk: under a loaded CI machine that alone took past the timeout)
    ("memory bomb", "a = []\nwhile True:\n    a.append(bytes(10**7))", "memory", "memory"),
    ("one huge allocation", "x = bytearray(8 * 1024**3)", "memory", "memory"),
    (
        "socket to 127.0.0.1",
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 22))",
        "forbidden",
        "forbidden: socket",
    ),
    ("kill the parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", "forbidden", "forbidden: os.kill"),
    ("kill everything", "import os, signal\nos.kill(-1, signal.SIGKILL)", "forbidden", "forbidden: os.kill"),
    ("ctypes kill", "import ctypes\nctypes.CDLL(None).kill(-1, 9)", "forbidden", "forbidden: ctypes"),
    ("sys.exit(0) before the asserts", "import sys\nsys.exit(0)", "exit", "exit"),
    ("os._exit(0) before the asserts", "import os\nos._exit(0)", "exit", "exit"),
    ("100 MB of output", "import sys\nsys.stdout.write('x' * 100_000_000)", "output_limit", "output_limit"),
    (
        "100 MB on stderr in pieces",
        "import sys\nfor _ in range(100):\n    sys.stderr.write('y' * 1_000_000)",
        "output_limit",
        "output_limit",
    ),
]


@pytest.mark.parametrize("name,code,status,reason", ESCAPES, ids=[e[0] for e in ESCAPES])
def test_escape(name, code, status, reason, outside):
    t0 = time.monotonic()
    r = run_python(code, "__report__('driver ran')", LIM)
    took = time.monotonic() - t0
    assert r.status == status, r
    assert r.reason.startswith(reason), r.reason
    assert not r.ok and r.report is None or r.status == "forbidden"
    assert took <= LIM.timeout + SLACK
    assert outside.read_bytes() == b"precious"


def test_write_outside_the_sandbox(outside):
    for code in (
        f"open({str(outside)!r}, 'w').write('gone')",
        f"import os\nos.remove({str(outside)!r})",
        f"import shutil\nshutil.rmtree({str(outside.parent)!r})",
        f"import os\nfd = os.open({str(outside)!r}, os.O_WRONLY | os.O_TRUNC)",
        "open('/tmp/marginal-sandbox-escape.txt', 'w').write('x')",
        f"import pathlib\npathlib.Path({str(outside)!r}).write_text('gone')",
    ):
        r = run_python(code, "", LIM)
        assert r.status == "forbidden", (code, r)
        assert outside.read_bytes() == b"precious"
    assert not os.path.exists("/tmp/marginal-sandbox-escape.txt")


def test_ok_run_reports_and_may_use_its_own_folder():
    r = run_python(
        "import os, json\nopen('scratch.txt', 'w').write('hi')\n"
        "x = open('scratch.txt').read()\nos.remove('scratch.txt')",
        "__report__({'x': __ns__['x'], 'pid_seen': __import__('os').getpid()})",
        LIM,
    )
    assert r.ok and r.reason is None, r
    assert r.report["x"] == "hi"
    assert "audit" in r.isolation and "rlimits" in r.isolation


def test_errors_are_failures_with_reasons():
    r = run_python("def f(:\n    pass", "", LIM)
    assert r.status == "error" and "SyntaxError" in r.reason
    r = run_python("def f():\n    return f()\nf()", "", LIM)
    assert r.status == "error" and "RecursionError" in r.reason
    r = run_python("x = 1", "raise KeyError('k')", LIM)
    assert r.status == "error" and "KeyError" in r.reason


def test_network_namespace_when_available():
    r = run_python(
        "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', 22))",
        "",
        Limits(timeout=3.0, block_sockets=False),
    )
    assert not r.ok
    if "netns" in r.isolation:
        assert "unreachable" in r.reason.lower() or "refused" in r.reason.lower(), r.reason


def test_pool_runs_many_in_order_within_bounds():
    jobs = [(f"x = {i} * 2", "__report__(__ns__['x'])") for i in range(6)] + [("while True: pass", "")]
    t0 = time.monotonic()
    rs = run_many(jobs, Limits(timeout=2.0), workers=2)
    assert [r.report for r in rs[:6]] == [0, 2, 4, 6, 8, 10]
    assert rs[6].status == "timeout"
    assert time.monotonic() - t0 < 2.0 + 6 * 1.0


def test_limits_validate():
    with pytest.raises(ValueError, match="timeout must be > 0"):
        Limits(timeout=0)
    with pytest.raises(ValueError, match="memory_mb"):
        Limits(memory_mb=-1)


def test_nothing_left_behind():
    import glob
    import tempfile

    run_many(
        [("import time\ntime.sleep(100)", ""), ("import os\nwhile True: os.fork()", "")], Limits(timeout=1.0), workers=2
    )
    mine = []
    for d in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(d, "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if b"cfg = json.loads(sys.argv[1])" in cmd:
            mine.append(d)
    assert mine == []
    assert glob.glob(os.path.join(tempfile.gettempdir(), "marginal-sandbox-*")) == []
