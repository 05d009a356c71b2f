"""Processes of the click-path benchmarks: web servers (gunicorn, granian), a pinned Redis of the
benchmark's own, process trees, their CPU time and memory (read from /proc).

Pinning uses ``taskset -c <core>`` in front of the command; a pinned process's children (gunicorn's
and granian's workers, their threads) inherit the CPU set. Nothing here asserts anything.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pin(core: int | None) -> list[str]:
    """``["taskset", "-c", "<core>"]``, or ``[]`` for ``None`` (not pinned)."""
    return [] if core is None else ["taskset", "-c", str(core)]


def gunicorn_cmd(target: str, port: int, workers: int, threads: int) -> list[str]:
    """gunicorn with the gthread worker, ``workers`` x ``threads``, no access log, on 127.0.0.1:port."""
    return [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", "gthread", "--threads", str(threads),
            "--access-logfile", "/dev/null", "--error-logfile", "-", "-b", f"127.0.0.1:{port}", target]


def granian_cmd(target: str, port: int, workers: int, threads: int, workdir: Path) -> list[str]:
    """granian's WSGI interface: ``workers`` processes of ``threads`` blocking threads (the threads
    that run the WSGI app) and one runtime thread each, no access log, on 127.0.0.1:port."""
    exe = shutil.which("granian", path=str(Path(sys.executable).parent)) or "granian"
    return [exe, "--interface", "wsgi", "--workers", str(workers), "--blocking-threads", str(threads),
            "--runtime-threads", "1", "--no-access-log", "--log-level", "warning", "--host", "127.0.0.1",
            "--port", str(port), "--working-dir", str(workdir), target]


def spawn(argv: list[str], *, cwd: Path, env: dict | None, log_path: Path) -> subprocess.Popen:
    """Start ``argv`` in its own session (stopped by its process group), output to ``log_path``."""
    log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM to ``proc``'s process group, SIGKILL after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def wait_up(url: str, timeout: float = 60) -> None:
    """Poll ``url`` until it answers; raises RuntimeError after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start_redis(port: int, core: int | None, log_dir: Path) -> subprocess.Popen:
    """A redis-server of the benchmark's own on 127.0.0.1:port (pinned to ``core``), with the
    README's production persistence (``appendonly yes``, ``appendfsync everysec``) in a temporary
    directory, no RDB snapshots."""
    data = tempfile.mkdtemp(prefix="partnernet-bench-redis-")
    proc = spawn([*pin(core), "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "yes", "--appendfsync", "everysec", "--dir", data, "--protected-mode", "no"],
                 cwd=Path(data), env=None, log_path=log_dir / "redis.log")
    import redis

    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            redis.Redis(port=port).ping()
            return proc
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError("redis-server did not start:\n" + (log_dir / "redis.log").read_text()[-2000:])


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                try:
                    todo.extend(int(x) for x in Path(f"/proc/{p}/task/{task}/children").read_text().split())
                except OSError:
                    pass
        except OSError:
            pass
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (all their threads)."""
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def pids_named(name: str) -> list[int]:
    """Processes whose command name is ``name`` (e.g. every ``postgres`` process of the machine)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def worker_rss(master: int) -> list[float]:
    """RSS (MB) of each process under a server's master that runs the app (its descendants)."""
    return [round(rss_mb(p), 1) for p in tree(master)[1:]]
