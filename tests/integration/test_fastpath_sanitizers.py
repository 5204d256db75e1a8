"""The compiled hit path built with AddressSanitizer and UBSan, fed 100,000 fuzz datagrams.

``dnscache/_fastpath.c`` parses untrusted bytes: this builds it with ``-fsanitize=address,undefined
-fno-sanitize-recover=all`` (any finding aborts the process with a report), preloads the ASan
runtime into a Python that was not built with it, and runs ``tests/fastpath_harness.py``:
``labs.dnsfuzz`` datagrams (mutated queries, scapy fuzz, random blobs up to 4096 octets) and
valid queries through a real loopback socket into ``serve()``, over cache entries fresh,
expiring, expired and too big for the client, each datagram also compared with the Python
walker. Zero findings and zero disagreements, or the test fails with the report.

The walker's reads are checked on exact-size heap buffers (``read_question(bytes)``: one octet
past the datagram is a finding); inside ``serve()`` the receive slots are one anonymous mapping
ASan does not poison, so there the check covers the entries (heap bytearrays) and the replies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from labs.runid import RunDir

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "dnscache" / "_fastpath.c"
HARNESS = ROOT / "tests" / "fastpath_harness.py"
PACKETS = 100_000
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def runtime(name: str) -> str:
    out = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True)
    path = out.stdout.strip()
    assert os.path.isabs(path), f"gcc has no {name}: install gcc (make setup does)"
    return path


@pytest.fixture
def sanitized(run_dir: RunDir) -> Path:
    so = run_dir.path / f"_fastpath{sysconfig.get_config_var('EXT_SUFFIX')}"
    cmd = [
        "gcc", "-shared", "-fPIC", "-O1", "-g", *SANITIZE, "-Wall", "-Wextra", "-Werror",
        "-Wno-unused-parameter", f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-o", str(so),
    ]  # fmt: skip
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    return so


def test_100k_fuzz_datagrams_under_asan_and_ubsan_find_nothing(sanitized: Path) -> None:
    env = {
        **os.environ,
        "LD_PRELOAD": runtime("libasan.so"),
        # CPython's own allocations at exit are not ours to judge; every other check stays on
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:halt_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    run = subprocess.run(
        [sys.executable, str(HARNESS), str(sanitized), str(PACKETS), "20261207"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    report = run.stderr[-4000:]
    assert "AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr, report
    assert run.returncode == 0, (run.stdout, report)
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert counts["mismatches"] == 0, counts
    assert counts["sent"] >= PACKETS and counts["received"] == counts["sent"], counts
    # the hit path itself was exercised, not only the walker: answers, misses and prefetches
    assert counts["answered"] > 1000 and counts["replies"] == counts["answered"], counts
    assert counts["prefetch"] > 0 and counts["misses"] > PACKETS // 2, counts
