"""The chaos workload as data (pure): the zones' names and answers, and the query stream.

Everything here is a function of the seed and the mix, so the parent (which writes the zone files)
and every load generator (which checks answers) build exactly the same names and the same stream
without exchanging anything but a few numbers; :func:`Stream.digest` proves it afterwards.

Names (one table, indexed by position):

- ``hot``: ``www{i}.example.test.`` (every 5th with two A records, every 3rd with an AAAA) and
  ``svc{i}.ns{i % 10}.svc.cluster.local.`` (A only: an AAAA query is NODATA), TTL ``hot_ttl``,
  picked Zipf-distributed, so the tail expires between hits (prefetch and serve-stale matter);
- ``nx``: ``nx{i}.example.test.`` and search-path expansions ``www{i}.example.test.default.svc.
  cluster.local.`` (what ``ndots:5`` makes pods ask), NXDOMAIN with negative TTL ``negative_ttl``;
- ``cold``: ``c{i}.example.test.``, each asked exactly once in the whole run (a cache can only get
  it from an upstream), TTL ``cold_ttl``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from array import array
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from itertools import accumulate

ORIGIN = "example.test."
CLUSTER = "cluster.local."
ZONES = (ORIGIN, CLUSTER)

CLS_HOT, CLS_COLD, CLS_NX = 0, 1, 2
CLASS_NAMES = ("hot", "cold", "nx")
T_A, T_AAAA = 1, 28
QTYPES = (T_A, T_AAAA)  # stream qtype byte 0 -> A, 1 -> AAAA
NOERROR, NXDOMAIN = 0, 3

# answers come from 198.18.16.0 .. 198.19.255.255 (the lab range above the subnets the lab's
# interfaces use) and 2001:db8:c4a0::/48
_V4_BASE = int(ipaddress.IPv4Address("198.18.16.0"))
_V4_SPAN = 2 * 65536 - 16 * 256
_V6_BASE = int(ipaddress.IPv6Address("2001:db8:c4a0::"))


@dataclass(frozen=True)
class Mix:
    """The shape of the query stream and of the zones behind it."""

    hot: float = 0.80  # share of queries for hot names
    nx: float = 0.15  # share for nonexistent names (repeated, so negative caching counts)
    cold: float = 0.05  # share for names asked once
    aaaa: float = 0.25  # share of AAAA among hot and cold queries (the rest A)
    nx_aaaa: float = 0.40  # share of AAAA among nx queries
    tcp: float = 0.05  # share sent over TCP
    cluster: float = 0.15  # share of hot and nx queries inside cluster.local
    n_hot: int = 1000
    n_cluster: int = 200
    n_nx: int = 500
    zipf: float = 0.8
    hot_ttl: int = 30
    cold_ttl: int = 300
    negative_ttl: int = 30

    def __post_init__(self) -> None:
        shares = (self.hot, self.nx, self.cold)
        if any(s < 0 for s in shares) or abs(sum(shares) - 1.0) > 1e-9:
            raise ValueError("hot + nx + cold shares must be non-negative and add up to 1")
        for name in ("aaaa", "nx_aaaa", "tcp", "cluster"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if min(self.n_hot, self.n_cluster, self.n_nx) < 1:
            raise ValueError("n_hot, n_cluster and n_nx must be at least 1")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @property
    def hot_count(self) -> int:
        return self.n_hot + self.n_cluster

    @property
    def nx_base(self) -> int:
        return self.hot_count

    @property
    def nx_count(self) -> int:
        return 2 * self.n_nx  # half example.test, half cluster.local search-path names

    @property
    def cold_base(self) -> int:
        return self.nx_base + self.nx_count


@dataclass(frozen=True)
class Name:
    """One name of the table and what the zones hold for it."""

    text: str  # absolute, lower case
    zone: str
    cls: int
    a: tuple[bytes, ...] = ()  # sorted rdata
    aaaa: tuple[bytes, ...] = ()
    ttl: int = 0

    @property
    def exists(self) -> bool:
        return self.cls != CLS_NX

    def expected(self, qtype: int) -> tuple[int, tuple[bytes, ...]]:
        """(rcode, sorted RDATA) a correct answer carries for ``qtype``."""
        if not self.exists:
            return NXDOMAIN, ()
        return NOERROR, self.a if qtype == T_A else self.aaaa


@dataclass
class Stream:
    """The query stream, one entry per query in send order (columns, for memory)."""

    cls: bytearray = field(default_factory=bytearray)
    name: array[int] = field(default_factory=lambda: array("I"))
    qtype: bytearray = field(default_factory=bytearray)  # index into QTYPES
    tcp: bytearray = field(default_factory=bytearray)
    n_cold: int = 0

    def __len__(self) -> int:
        return len(self.cls)

    def digest(self) -> str:
        """sha256 over every column: equal digests mean the same queries in the same order."""
        h = hashlib.sha256()
        for col in (self.cls, self.name.tobytes(), self.qtype, self.tcp):
            h.update(len(col).to_bytes(8, "big"))
            h.update(col)
        return h.hexdigest()


def _zipf_cum(n: int, s: float) -> list[float]:
    return list(accumulate(1.0 / (k**s) for k in range(1, n + 1)))


def build_stream(total: int, mix: Mix, seed: int) -> Stream:
    """``total`` queries: class, name index, qtype, transport; deterministic by ``seed``."""
    if total < 0:
        raise ValueError("total must be >= 0")
    rng = random.Random(f"chaos-stream-{seed}")
    hot_ex = _zipf_cum(mix.n_hot, mix.zipf)
    hot_cl = _zipf_cum(mix.n_cluster, mix.zipf)
    nx_cum = _zipf_cum(mix.n_nx, mix.zipf)
    # popularity rank -> name index, shuffled so popularity is not the zone order
    ex_perm = list(range(mix.n_hot))
    cl_perm = list(range(mix.n_hot, mix.hot_count))
    nx_ex_perm = list(range(mix.nx_base, mix.nx_base + mix.n_nx))
    nx_cl_perm = list(range(mix.nx_base + mix.n_nx, mix.cold_base))
    for perm in (ex_perm, cl_perm, nx_ex_perm, nx_cl_perm):
        rng.shuffle(perm)
    s = Stream()
    cls_out, name_out, qt_out, tcp_out = s.cls, s.name, s.qtype, s.tcp
    r = rng.random
    p_hot, p_hot_nx = mix.hot, mix.hot + mix.nx
    n_cold = 0
    for _ in range(total):
        u = r()
        if u < p_hot:
            cls = CLS_HOT
            if r() < mix.cluster:
                idx = cl_perm[bisect_right(hot_cl, r() * hot_cl[-1])]
            else:
                idx = ex_perm[bisect_right(hot_ex, r() * hot_ex[-1])]
            qt = 1 if r() < mix.aaaa else 0
        elif u < p_hot_nx:
            cls = CLS_NX
            perm = nx_cl_perm if r() < mix.cluster else nx_ex_perm
            idx = perm[bisect_right(nx_cum, r() * nx_cum[-1])]
            qt = 1 if r() < mix.nx_aaaa else 0
        else:
            cls = CLS_COLD
            idx = mix.cold_base + n_cold
            n_cold += 1
            qt = 1 if r() < mix.aaaa else 0
        cls_out.append(cls)
        name_out.append(idx)
        qt_out.append(qt)
        tcp_out.append(1 if r() < mix.tcp else 0)
    s.n_cold = n_cold
    return s


def _v4(k: int) -> bytes:
    return (_V4_BASE + k % _V4_SPAN).to_bytes(4, "big")


def _v6(k: int) -> bytes:
    return (_V6_BASE + k).to_bytes(16, "big")


def build_names(mix: Mix, n_cold: int) -> list[Name]:
    """The name table the stream indexes: hot, then nx, then ``n_cold`` cold names."""
    names: list[Name] = []
    k = 0  # address counter: every record gets its own address
    for i in range(mix.n_hot):
        a = [_v4(k)]
        k += 1
        if i % 5 == 0:
            a.append(_v4(k))
            k += 1
        aaaa = (_v6(k),) if i % 3 == 0 else ()
        names.append(Name(f"www{i}.{ORIGIN}", ORIGIN, CLS_HOT, tuple(sorted(a)), aaaa, mix.hot_ttl))
    for i in range(mix.n_cluster):
        names.append(Name(f"svc{i}.ns{i % 10}.svc.{CLUSTER}", CLUSTER, CLS_HOT, (_v4(k),), (), mix.hot_ttl))
        k += 1
    for i in range(mix.n_nx):
        names.append(Name(f"nx{i}.{ORIGIN}", ORIGIN, CLS_NX))
    for i in range(mix.n_nx):
        names.append(Name(f"www{i}.{ORIGIN}default.svc.{CLUSTER}", CLUSTER, CLS_NX))
    for i in range(n_cold):
        aaaa = (_v6(k),) if i % 4 == 0 else ()
        names.append(Name(f"c{i}.{ORIGIN}", ORIGIN, CLS_COLD, (_v4(k),), aaaa, mix.cold_ttl))
        k += 1
    return names


ZoneRecord = tuple[str, str, str, int]  # owner (absolute), type, rdata text, ttl


def zone_records(names: list[Name], mix: Mix) -> dict[str, list[ZoneRecord]]:
    """Master-file content per zone origin (SOA, NS and glue first), for NSD and Knot alike."""
    neg = mix.negative_ttl
    out: dict[str, list[ZoneRecord]] = {}
    for origin in ZONES:
        ns = f"ns1.{origin}"
        out[origin] = [
            (origin, "SOA", f"{ns} hostmaster.{origin} 1 3600 600 86400 {neg}", neg),
            (origin, "NS", ns, 3600),
            (ns, "A", "198.18.1.1", 3600),
        ]
    for n in names:
        if not n.exists:
            continue
        recs = out[n.zone]
        recs += [(n.text, "A", str(ipaddress.IPv4Address(r)), n.ttl) for r in n.a]
        recs += [(n.text, "AAAA", str(ipaddress.IPv6Address(r)), n.ttl) for r in n.aaaa]
    return out


def name_to_wire(text: str) -> bytes:
    """Uncompressed wire form of an absolute name (lower case)."""
    labels = [lab for lab in text.lower().rstrip(".").split(".") if lab]
    return b"".join(bytes((len(lab),)) + lab.encode("ascii") for lab in labels) + b"\x00"


def question_wire(name: Name, qtype: int) -> bytes:
    """QNAME + QTYPE + QCLASS IN: the question section of a query for ``name``."""
    return name_to_wire(name.text) + qtype.to_bytes(2, "big") + b"\x00\x01"
