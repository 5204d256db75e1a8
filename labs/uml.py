"""Run a command inside a User-Mode Linux guest: a full kernel for what the host kernel lacks.

The guest is Debian's ``user-mode-linux`` (kernel 6.1, modules in ``/usr/lib/uml/modules``)
booted with this machine's filesystem as its root (hostfs): the project's venv, pytest and
pyroute2 run in it unchanged. Its kernel has 802.1Q VLANs, dummy, vrf, bond, bridge VLAN
filtering, QinQ and netem, which a container's host kernel may not. One CPU and HZ=100: use it
for correctness, never for timings.

    python -m labs.uml [-m 768M] [-t 300] -- CMD ARGS...     # exit status of CMD
    rc, output = run_in_uml(["ip", "link"], timeout=60)

What the runner takes care of:

- **modules**: the guest root has no ``/lib/modules`` for its kernel, so a private modprobe
  (``modprobe -d DIR``, ``DIR/lib/modules`` -> ``/usr/lib/uml/modules``) is installed as
  ``/proc/sys/kernel/modprobe``: netlink requests auto-load ``8021q``, ``vxlan``...
- **namespaces**: a fresh tmpfs on ``/run`` in the guest, so its ``ip netns add`` never
  touches the host's ``/run/netns``; ``/proc``, ``/sys``, ``/dev/shm``, ``/dev/pts`` are the
  guest's own.
- **exit status**: UML always exits 0, so the command's status goes through a file.
- **environment**: the working directory, ``PATH``, ``HOME``, ``VIRTUAL_ENV`` (the running
  venv's ``bin`` first on ``PATH``), ``PYTHONPATH`` (plus this project's root), ``LANG`` and
  ``TERM`` are carried over; ``IN_UML=1`` is set.
- **timeout**: the guest is killed (its process group, which only it is in) after ``timeout``
  seconds; the status is then 124.
- **XSAVE state** (``ptrace set fp regs failed, errno = 14``, then a kernel panic): UML 6.1
  restores a process's FPU registers with ``PTRACE_SETREGSET NT_X86_XSTATE`` and an 832-byte
  buffer (x87/SSE + AVX), but the host kernel accepts that request only with the *full* XSAVE
  size, which is larger on every CPU with AVX-512, PKU or AMX. A small ``LD_PRELOAD`` library
  (compiled on first use with ``cc``, C source below) keeps a full-size shadow buffer per
  UML buffer: reads fill the shadow and hand UML its part, writes merge UML's part into the
  shadow and write it whole. UML itself is unchanged; on a host whose XSAVE state fits, the
  library passes every call through.

Needs: ``apt-get install user-mode-linux kmod gcc libc6-dev`` (``make setup``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

DEFAULT_MEM = "768M"
MODULES = Path("/usr/lib/uml/modules")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CARRIED = ("PATH", "HOME", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "LANG", "TERM")
NOISE = (
    "Warning: tempdir",
    "SELinux:",
    "mmapper_init",
    "Failed to initialize ubd",
    "Powering off",
    "reboot: System halted",
    "Linux version",
)
SETUP_HINT = "`make setup` installs it (Debian packages user-mode-linux kmod gcc libc6-dev)"

XSTATE_SHIM = r"""
/* labs.uml: full-size XSAVE buffers for UML's PTRACE_{GET,SET}REGSET NT_X86_XSTATE calls */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NT_X86_XSTATE_ 0x202
#define SLOTS 8192

typedef long (*ptrace_fn)(enum __ptrace_request, ...);
static ptrace_fn real_ptrace;
static size_t full;                                  /* the host's XSAVE size, learnt once */
static struct { void *key; unsigned char *buf; } slots[SLOTS];

static long call(enum __ptrace_request req, pid_t pid, void *addr, void *data) {
    if (!real_ptrace) real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    return real_ptrace(req, pid, addr, data);
}

/* one shadow per UML buffer (each guest thread has its own): its AVX-512/AMX part survives */
static unsigned char *shadow(void *key) {
    size_t h = ((size_t)key >> 4) % SLOTS;
    for (size_t i = 0; i < SLOTS; i++) {
        size_t j = (h + i) % SLOTS;
        if (slots[j].key == key) return slots[j].buf;
        if (!slots[j].key) {
            slots[j].buf = calloc(1, full);
            if (!slots[j].buf) return NULL;
            slots[j].key = key;
            return slots[j].buf;
        }
    }
    return NULL;
}

long ptrace(enum __ptrace_request req, ...) {
    va_list ap;
    va_start(ap, req);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    if ((req == PTRACE_GETREGSET || req == PTRACE_SETREGSET) && (long)addr == NT_X86_XSTATE_ && data) {
        struct iovec *iov = data;
        if (!full) {
            static unsigned char probe[1 << 16];
            struct iovec p = { probe, sizeof probe };
            if (call(PTRACE_GETREGSET, pid, addr, &p) == 0) full = p.iov_len;
        }
        if (full > iov->iov_len) {
            unsigned char *sh = shadow(iov->iov_base);
            if (sh) {
                struct iovec f = { sh, full };
                if (req == PTRACE_GETREGSET) {
                    long r = call(req, pid, addr, &f);
                    if (r == 0) memcpy(iov->iov_base, sh, iov->iov_len);
                    return r;
                }
                memcpy(sh, iov->iov_base, iov->iov_len);
                return call(req, pid, addr, &f);
            }
        }
    }
    return call(req, pid, addr, data);
}
"""


class UmlError(RuntimeError):
    """The guest cannot be started here (linux.uml, modules or a C compiler missing)."""


def shim_library(cache: Path | None = None) -> Path:
    """The XSAVE shim, compiled once per source version into ``cache``."""
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "netkit"
    digest = hashlib.sha256(XSTATE_SHIM.encode()).hexdigest()[:12]
    lib = cache / f"uml-xstate-{digest}.so"
    if lib.exists():
        return lib
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise UmlError(f"a C compiler (cc) is needed to build the UML XSAVE shim: {SETUP_HINT}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        src = Path(tmp) / "shim.c"
        src.write_text(XSTATE_SHIM)
        out = Path(tmp) / "shim.so"
        res = subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src), "-ldl"],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise UmlError(f"building the UML XSAVE shim failed: {res.stderr.strip()}")
        os.replace(out, lib)  # atomic: a concurrent run sees the old name or a whole file
    return lib


def guest_environment() -> dict[str, str]:
    """What the command sees inside the guest (see the module docstring)."""
    env = {k: os.environ[k] for k in CARRIED if os.environ.get(k)}
    venv = sys.prefix if sys.prefix != sys.base_prefix else os.environ.get("VIRTUAL_ENV")
    path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if venv:
        env["VIRTUAL_ENV"] = venv
        if f"{venv}/bin" not in path.split(":"):
            path = f"{venv}/bin:{path}"
    for d in ("/usr/sbin", "/sbin"):
        if d not in path.split(":"):
            path += f":{d}"
    env["PATH"] = path
    pythonpath = [p for p in env.get("PYTHONPATH", "").split(":") if p]
    if str(PROJECT_ROOT) not in pythonpath:
        pythonpath.append(str(PROJECT_ROOT))
    env["PYTHONPATH"] = ":".join(pythonpath)
    env["IN_UML"] = "1"
    return env


def init_script(argv: list[str], work: Path, modprobe: Path, cwd: str) -> str:
    lines = [
        "#!/bin/bash",
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        # the guest's own /proc, /sys; a private /run keeps `ip netns add` off the host
        "mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t tmpfs tmpfs /run",
        "mkdir -p /dev/shm /dev/pts; mount -t tmpfs tmpfs /dev/shm; mount -t devpts devpts /dev/pts",
        f"echo {shlex.quote(str(modprobe))} > /proc/sys/kernel/modprobe",
        "ip link set lo up",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(guest_environment().items())]
    lines += [
        f"cd {shlex.quote(cwd)}",
        shlex.join(argv),
        f"echo $? > {shlex.quote(str(work / 'rc'))}",
        "sync; poweroff -f",
    ]
    return "\n".join(lines) + "\n"


def run_in_uml(
    argv: list[str],
    timeout: float = 300.0,
    mem: str = DEFAULT_MEM,
    *,
    cwd: str | None = None,
    stream: bool = False,
) -> tuple[int, str]:
    """Run ``argv`` in a UML guest; (its exit status, the console output).

    124 on timeout, 255 if the guest died before the command finished. ``stream`` also copies
    the output to this process's stdout as it comes.
    """
    uml = shutil.which("linux.uml")
    if uml is None:
        raise UmlError(f"linux.uml not found: {SETUP_HINT}")
    if not MODULES.is_dir():
        raise UmlError(f"{MODULES} not found (the UML kernel's modules): {SETUP_HINT}")
    shim = shim_library()
    with tempfile.TemporaryDirectory(prefix="netkit-uml-") as tmp:
        work = Path(tmp)
        (work / "modroot" / "lib").mkdir(parents=True)
        (work / "modroot" / "lib" / "modules").symlink_to(MODULES)
        modprobe = work / "modprobe"
        modprobe.write_text(
            f'#!/bin/sh\nexec /usr/sbin/modprobe -d {shlex.quote(str(work / "modroot"))} "$@"\n'
        )
        modprobe.chmod(0o755)
        init = work / "init"
        init.write_text(init_script(argv, work, modprobe, cwd or os.getcwd()))
        init.chmod(0o755)
        (work / "rc").write_text("255\n")
        cmd = [
            uml, f"mem={mem}", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw",
            f"init={init}", "con=null", "ssl=null", "con0=null,fd:1", "quiet",
        ]  # fmt: skip
        env = {**os.environ, "TMPDIR": "/dev/shm", "LD_PRELOAD": str(shim)}
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # the guest's processes form a group only it is in
        )
        out: list[str] = []
        timed_out = False

        def kill() -> None:
            nonlocal timed_out
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace").replace("\r", "")
                if line.startswith(NOISE) or (not out and not line.strip()):
                    continue  # UML's own messages, blank lines before the command's output
                out.append(line)
                if stream:
                    sys.stdout.write(line)
                    sys.stdout.flush()
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                kill()
                proc.wait()
        if timed_out:
            return 124, "".join(out) + f"\nnetkit.uml: timed out after {timeout:g} s\n"
        try:
            rc = int((work / "rc").read_text().strip() or "255")
        except (OSError, ValueError):
            rc = 255
        return rc, "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labs.uml",
        description="Run a command inside a User-Mode Linux guest whose root is this machine's "
        "filesystem; exit with the command's status (124 on timeout).",
    )
    parser.add_argument("-m", "--mem", default=DEFAULT_MEM, help=f"guest memory (default {DEFAULT_MEM})")
    parser.add_argument("-t", "--timeout", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command is required: python -m labs.uml -- CMD ARGS...")
    try:
        rc, _ = run_in_uml(command, args.timeout, args.mem, stream=True)
    except UmlError as exc:
        print(f"labs.uml: {exc}", file=sys.stderr)
        return 127
    return rc


if __name__ == "__main__":
    sys.exit(main())
