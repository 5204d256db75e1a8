"""labs.cpucap.CpuCap against the kernel's cgroups: a busy process is held to its quota, the
cgroup is gone afterwards (also when the block fails), and every way it cannot work says why."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.cpucap import CpuCap, CpuCapError
from labs.runid import new_run_id

BUSY = [sys.executable, "-c", "while True: pass"]


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(BUSY)
    try:
        yield proc
    finally:
        proc.kill()  # ours, by PID
        proc.wait()


def cpu_seconds(pid: int) -> float:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def test_a_busy_process_gets_its_quota_and_the_cgroup_is_removed(busy: subprocess.Popen[bytes]) -> None:
    name = f"{new_run_id()}-cap"
    with CpuCap(name, 0.2) as cap:
        assert cap.path is not None and cap.path.is_dir()
        path = cap.path
        cap.add(busy.pid)
        assert cap.pids() == [busy.pid]
        start, t0 = cpu_seconds(busy.pid), time.monotonic()
        time.sleep(1.5)
        share = (cpu_seconds(busy.pid) - start) / (time.monotonic() - t0)
    assert 0.1 < share < 0.3, f"capped at 0.2 core, used {share:.2f}"
    assert not path.exists()
    assert busy.poll() is None  # still running, back in our own cgroup
    start, t0 = cpu_seconds(busy.pid), time.monotonic()
    time.sleep(0.5)
    assert (cpu_seconds(busy.pid) - start) / (time.monotonic() - t0) > 0.5  # uncapped again


def test_the_cgroup_is_removed_when_the_block_fails(busy: subprocess.Popen[bytes]) -> None:
    with pytest.raises(RuntimeError, match="boom"), CpuCap(f"{new_run_id()}-fail", 0.5) as cap:
        cap.add(busy.pid)
        path = cap.path
        raise RuntimeError("boom")
    assert path is not None and not path.exists()


def test_a_process_that_has_exited_is_not_an_error() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with CpuCap(f"{new_run_id()}-gone", 0.5) as cap:
        cap.add(proc.pid)
        assert cap.pids() == []


@pytest.mark.parametrize(
    ("name", "cores", "error"),
    [("", 0.5, "bad cgroup name"), ("a/b", 0.5, "bad cgroup name"), ("ok", 0.0, "cores must be")],
)
def test_bad_arguments(name: str, cores: float, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        CpuCap(name, cores)


def test_add_outside_the_block() -> None:
    with pytest.raises(CpuCapError, match="outside its with block"):
        CpuCap("x", 0.5).add(1)


def test_no_cpu_controller(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")  # v2 without cpu, and no v1 cpu
    with pytest.raises(CpuCapError, match="no cgroup cpu controller"):
        CpuCap("x", 0.5, root=tmp_path, proc_cgroup="0::/\n").__enter__()


def test_v2_cpu_controller_that_cannot_be_delegated(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    own = tmp_path / "job"
    own.mkdir()
    (own / "cgroup.subtree_control").mkdir()  # unusable, as a busy cgroup's is (EBUSY)
    with pytest.raises(CpuCapError, match="cannot enable the cpu controller below"):
        CpuCap("x", 0.5, root=tmp_path, proc_cgroup="0::/job\n").__enter__()


def test_v2_writes_cpu_max_next_to_the_callers_cgroup(tmp_path: Path) -> None:
    """On a plain directory standing in for cgroupfs: what is written where (cgroupfs itself
    would create the files; here writing creates them)."""
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    own = tmp_path / "job"
    own.mkdir()
    (own / "cgroup.subtree_control").write_text("")
    cap = CpuCap("x", 0.25, root=tmp_path, proc_cgroup="0::/job\n").__enter__()
    assert (own / "x" / "cpu.max").read_text() == "2500 10000"
    assert "+cpu" in (own / "cgroup.subtree_control").read_text()
    assert cap.path == own / "x"


def test_missing_own_line(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    with pytest.raises(CpuCapError, match="no cpu line"):
        CpuCap("x", 0.5, root=tmp_path, proc_cgroup="4:memory:/\n").__enter__()


def test_an_existing_cgroup_of_that_name_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "cpu" / "x").mkdir(parents=True)
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    with pytest.raises(CpuCapError, match="cannot create cgroup"):
        CpuCap("x", 0.5, root=tmp_path, proc_cgroup="1:cpu:/\n").__enter__()
