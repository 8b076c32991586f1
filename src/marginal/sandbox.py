"""Run untrusted Python (model-written code) in a throw-away subprocess.

Layers, each applied when the machine allows it (``RunResult.isolation`` says
which were):

- a fresh ``python -I -B`` process in its own session, a temporary working
  directory (removed afterwards), a minimal environment and no stdin;
- ``resource`` limits: CPU time, address space, file size, no core files, and
  no new processes (``RLIMIT_NPROC`` 0 after the sandbox's single fork);
- when started as root: the code runs as ``nobody`` (it cannot signal or write
  the caller's files);
- new user, network and PID namespaces (``unshare``): no network interface but
  a down loopback, and no view of (or signals to) processes outside;
- a Python audit hook installed before the code runs: opening files for
  writing outside the working directory, ``os.kill``/``fork``/``exec``/
  ``system``/``subprocess``, sockets and ``ctypes`` are refused and recorded;
- the caller enforces a wall-clock timeout and an output cap, and kills the
  whole process group at the end.

A run ends as ``ok`` only when the program and its trusted driver finish and
report; every other end (``timeout``, ``memory``, ``output_limit``,
``forbidden``, ``exit`` before the end, ``error``, ``crash``) is a failed
result with a short reason. Left out: seccomp filters, cgroups, a read-only
file system view, and defending against code that deliberately forges the
driver's report.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "forbidden", "exit", "crash"]


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    timeout: float = 10.0
    """Wall-clock seconds for the whole run (start-up included)."""
    memory_mb: int = 1024
    """Address-space limit (RLIMIT_AS)."""
    file_size_mb: int = 16
    """Largest file the code may write (RLIMIT_FSIZE)."""
    output_bytes: int = 1_000_000
    """Most bytes of stdout + stderr kept; more ends the run as output_limit."""
    block_sockets: bool = True
    """Refuse socket creation in the audit hook (on top of the network namespace)."""

    def __post_init__(self) -> None:
        if not (self.timeout > 0):
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        for name in ("memory_mb", "file_size_mb", "output_bytes"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v > 0):
                raise ValueError(f"{name} must be an integer > 0, got {v!r}")


@dataclass(frozen=True)
class RunResult:
    """How a sandboxed run ended."""

    status: Status
    reason: str | None
    """Short stable code plus detail (``"timeout: 2.0 s"``); None when ok."""
    report: Any = None
    """What the trusted driver passed to ``__report__`` (JSON values), or None."""
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    isolation: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# The harness runs as ``python -I -B -c HARNESS CONFIG``. Everything before
# ``_run()`` is trusted set-up; the program and the driver run inside _run().
HARNESS = r"""
import json, os, sys, resource, signal
cfg = json.loads(sys.argv[1])
_write, _dumps, _exit = os.write, json.dumps, os._exit
FD = cfg["fd"]
iso = []

def _send(obj):
    data = _dumps(obj).encode()
    while data:
        n = _write(FD, data)
        data = data[n:]

def _lim(kind, soft, hard=None):
    try:
        resource.setrlimit(kind, (soft, soft if hard is None else hard))
        return True
    except (ValueError, OSError):
        return False

with open("program.py", encoding="utf-8") as f:
    program = f.read()
with open("driver.py", encoding="utf-8") as f:
    driver = f.read()
_lim(resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 1)
_lim(resource.RLIMIT_AS, cfg["mem"])
_lim(resource.RLIMIT_FSIZE, cfg["fsize"])
_lim(resource.RLIMIT_CORE, 0)
iso.append("rlimits")

real_root = os.getuid() == 0 and not cfg["nobody"]
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
if cfg["nobody"]:
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        iso.append("nobody")
    except OSError:
        pass
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x40000000, 0x20000000
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID) == 0:
    iso += ["userns", "netns", "pidns"]
elif libc.unshare(CLONE_NEWNET) == 0:
    iso.append("netns")

pid = os.fork()
if pid:  # the nanny: wait, then leave with the child's status
    while True:
        try:
            _, st = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            _exit(70)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(st):
        _exit(128 + os.WTERMSIG(st))
    _exit(os.WEXITSTATUS(st))

libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the nanny
if _lim(resource.RLIMIT_NPROC, 0) and not real_root:  # the kernel exempts uid 0 from RLIMIT_NPROC
    iso.append("noproc")
root = os.path.realpath(cfg["root"])
forbidden = []
WRITE_EVENTS = {"os.remove", "os.rename", "os.replace", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
                "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move",
                "os.chflags", "os.lchflags"}
DENY = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
        "subprocess.Popen", "ctypes.", "resource.setrlimit", "resource.prlimit", "signal.pthread_kill",
        "os.setuid", "os.setgid", "pty.", "sys.remote_exec")
if cfg["block_sockets"]:
    DENY = DENY + ("socket.",)
_O_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_realpath, _fspath, _sep = os.path.realpath, os.fspath, os.sep

def _inside(p):
    try:
        p = _fspath(p)
    except TypeError:
        return True
    if isinstance(p, bytes):
        p = p.decode("utf-8", "replace")
    if not isinstance(p, str):
        return True
    r = _realpath(p)
    return r == root or r.startswith(root + _sep) or r == "/dev/null"

class Forbidden(PermissionError):
    pass

def _hook(event, args):
    bad = None
    if event == "open":
        path, mode, flags = args
        writing = (any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _O_WRITE))
        if writing and not isinstance(path, int) and not _inside(path):
            bad = f"open for writing outside the sandbox: {path!r}"
    elif event in WRITE_EVENTS:
        if not all(_inside(a) for a in args if isinstance(a, (str, bytes, os.PathLike))):
            bad = f"{event} outside the sandbox"
    elif event.startswith(DENY):
        bad = event
    elif event == "import" and args[0] in ("_posixsubprocess", "_ctypes"):
        bad = f"import {args[0]}"
    if bad is not None:
        if len(forbidden) < 5:
            forbidden.append(bad)
        raise Forbidden(f"sandbox: {bad}")

reports = []
def __report__(obj):
    reports.append(obj)

def _result(status, reason):
    if forbidden and status != "memory":
        status, reason = "forbidden", "forbidden: " + forbidden[0]
    _send({"status": status, "reason": reason, "report": reports[-1] if reports else None, "isolation": iso})
    _exit(0)

# warm, before limits bite
import copy, math, random, re, string, itertools, functools, collections, heapq, hashlib, typing, ast, fractions
import subprocess
subprocess._fork_exec = None  # the raw fork primitive; the module stays importable
sys.modules.pop("_posixsubprocess", None)
sys.setrecursionlimit(3000)
sys.addaudithook(_hook)
iso.append("audit")
random.seed(0)
try:
    ns = {"__name__": "candidate", "__builtins__": __builtins__}
    exec(compile(program, "program.py", "exec"), ns)
    dns = {"__name__": "driver", "__builtins__": __builtins__, "__report__": __report__, "__ns__": ns}
    exec(compile(driver, "driver.py", "exec"), dns)
except SystemExit as e:
    _result("exit", f"exit: the code called exit({e.code!r}) before the end")
except MemoryError:
    _result("memory", "memory: MemoryError (limit %d MB)" % (cfg["mem"] >> 20))
except RecursionError:
    _result("error", "error: RecursionError")
except BaseException as e:
    _result("error", f"error: {type(e).__name__}: {str(e)[:200]}")
_result("ok", None)
"""


def _others_can_read(d: str) -> bool:
    """Whether user nobody can list ``d`` and reach it (every folder above searchable by others)."""
    import stat

    try:
        if not os.stat(d).st_mode & stat.S_IROTH:
            return False
        while True:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
            parent = os.path.dirname(d)
            if parent == d:
                return True
            d = parent
    except OSError:
        return False


def _drop_to_nobody() -> bool:
    """Run the code as nobody: only when we are root and nobody can still import the standard library."""
    return os.geteuid() == 0 and _others_can_read(os.path.dirname(os.__file__))


def _minimal_env(root: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": root,
        "TMPDIR": root,
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


def run_python(program: str, driver: str = "", limits: Limits = Limits()) -> RunResult:
    """Run ``program`` then the trusted ``driver`` in one sandboxed process.

    Both run in a fresh subprocess under the limits (module docstring). The
    driver sees the program's globals as ``__ns__`` and reports a JSON value
    with ``__report__(value)``; the run is ``ok`` only when both finish.
    """
    t0 = time.monotonic()
    root = tempfile.mkdtemp(prefix="marginal-sandbox-")
    rfd = wfd = -1
    proc: subprocess.Popen[bytes] | None = None
    try:
        os.chmod(root, 0o700)
        with open(os.path.join(root, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        with open(os.path.join(root, "driver.py"), "w", encoding="utf-8") as f:
            f.write(driver)
        nobody = _drop_to_nobody()
        if nobody:
            for name in ("", "program.py", "driver.py"):
                os.chown(os.path.join(root, name), 65534, 65534)
        rfd, wfd = os.pipe()
        cfg = {
            "fd": wfd,
            "root": root,
            "cpu": max(1, int(limits.timeout + 1)),
            "mem": limits.memory_mb << 20,
            "fsize": limits.file_size_mb << 20,
            "block_sockets": limits.block_sockets,
            "nobody": nobody,
        }
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", HARNESS, json.dumps(cfg)],
            cwd=root,
            env=_minimal_env(root),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(wfd,),
            start_new_session=True,
            close_fds=True,
        )
        os.close(wfd)
        wfd = -1
        return _collect(proc, rfd, limits, t0)
    finally:
        if proc is not None:
            _kill_group(proc)
            for s in (proc.stdout, proc.stderr):
                if s is not None:
                    s.close()
        for fd in (rfd, wfd):
            if fd >= 0:
                with suppress(OSError):
                    os.close(fd)
        shutil.rmtree(root, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _collect(proc: subprocess.Popen[bytes], rfd: int, limits: Limits, t0: float) -> RunResult:
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    bufs: dict[str, bytearray] = {"out": bytearray(), "err": bytearray(), "res": bytearray()}
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    sel.register(rfd, selectors.EVENT_READ, "res")
    open_streams = 3
    deadline = t0 + limits.timeout
    status: Status | None = None
    reason: str | None = None
    while open_streams:
        left = deadline - time.monotonic()
        if left <= 0:
            status, reason = "timeout", f"timeout: {limits.timeout:g} s wall clock"
            break
        for key, _ in sel.select(timeout=min(left, 0.5)):
            fd = key.fd if key.data == "res" else key.fileobj.fileno()  # type: ignore[union-attr]
            chunk = os.read(fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            bufs[key.data].extend(chunk)
        if len(bufs["out"]) + len(bufs["err"]) > limits.output_bytes:
            status, reason = "output_limit", f"output_limit: more than {limits.output_bytes} bytes of output"
            break
        if len(bufs["res"]) > 16 * limits.output_bytes:
            status, reason = "output_limit", "output_limit: report too large"
            break
    sel.close()
    _kill_group(proc)
    seconds = time.monotonic() - t0
    out = bytes(bufs["out"][: limits.output_bytes]).decode("utf-8", "replace")
    err = bytes(bufs["err"][: limits.output_bytes]).decode("utf-8", "replace")
    if status is not None:
        return RunResult(status, reason, None, out, err, seconds)
    try:
        msg = json.loads(bytes(bufs["res"]).decode("utf-8")) if bufs["res"] else None
    except (ValueError, UnicodeDecodeError):
        msg = None
    if isinstance(msg, dict) and msg.get("status") in ("ok", "error", "memory", "forbidden", "exit"):
        return RunResult(
            msg["status"], msg.get("reason"), msg.get("report"), out, err, seconds, tuple(msg.get("isolation") or ())
        )
    code = proc.returncode
    if code is not None and code > 128:
        sig = code - 128
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and seconds >= limits.timeout * 0.9):
            return RunResult("timeout", f"timeout: CPU limit ({name})", None, out, err, seconds)
        if sig == signal.SIGXFSZ:
            return RunResult("output_limit", f"output_limit: file size limit ({name})", None, out, err, seconds)
        return RunResult("crash", f"crash: killed by {name}", None, out, err, seconds)
    if "MemoryError" in err:
        return RunResult("memory", "memory: MemoryError", None, out, err, seconds)
    return RunResult("exit", f"exit: the process ended (code {code}) without a report", None, out, err, seconds)


def run_many(
    jobs: Sequence[tuple[str, str]],
    limits: Limits = Limits(),
    workers: int | None = None,
    on_done: Callable[[int, RunResult], None] | None = None,
) -> list[RunResult]:
    """`run_python` over many (program, driver) pairs in a bounded thread pool; results in input order."""
    if not jobs:
        return []
    workers = max(1, min(workers or default_workers(), len(jobs)))
    out: list[RunResult | None] = [None] * len(jobs)

    def one(i: int) -> None:
        r = run_python(jobs[i][0], jobs[i][1], limits)
        out[i] = r
        if on_done is not None:
            on_done(i, r)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as ex:
        list(ex.map(one, range(len(jobs))))
    return [r for r in out if r is not None]


def default_workers() -> int:
    """Sandbox workers: the CPU count, at most 8 (``$MARGINAL_SANDBOX_WORKERS`` overrides)."""
    env = os.environ.get("MARGINAL_SANDBOX_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, os.cpu_count() or 1))
