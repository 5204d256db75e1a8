"""The one module that talks to the Kubernetes API (the official ``kubernetes`` client): watches
done right, status written with optimistic concurrency, and leader election on a Lease.

- ``Informer``: list, then watch from the list's resourceVersion with bookmarks; a 410 (the
  revision was compacted) lists again; any other failure (the API server gone, a reset
  connection) backs off exponentially and lists again; every ``resync`` seconds the handler is
  given the whole cache. Until the first list succeeds ``synced`` is unset: a caller that acts on
  the cache before that would read "nothing desired", which is never an answer here. While the
  API server is unreachable the cache keeps what it last saw and nothing is reported deleted.
- ``update_status``: read, change, write the status with the read resourceVersion; a 409 reads
  again and retries.
- ``EventRecorder``: Events about an object, aggregated by reason and message.
- ``LeaderElector``: acquires and renews a ``coordination.k8s.io`` Lease by replace with its
  resourceVersion (so two replicas never both win); a leader that cannot renew within
  ``renew_deadline`` stops leading before its lease can be taken over.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client, watch

__all__ = ["Backoff", "EventRecorder", "Informer", "LeaderElector", "api_status", "update_status"]

log = logging.getLogger("netkit.control")

Obj = dict[str, Any]
Handler = Callable[[str, Obj], None]  # ("ADDED" | "MODIFIED" | "DELETED" | "RESYNC", object)


@dataclass
class Backoff:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... up to ``ceiling``; ``reset`` on success."""

    start: float = 0.5
    ceiling: float = 30.0
    current: float = field(default=0.0, init=False)

    def next(self) -> float:
        self.current = self.start if self.current == 0 else min(self.current * 2, self.ceiling)
        return self.current * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.current = 0.0


def api_status(exc: BaseException) -> int | None:
    """The HTTP status the API server refused with (409, 404 ...); None for anything else (the
    server unreachable, a reset connection)."""
    return exc.status if isinstance(exc, client.ApiException) else None


def plain(obj: Any) -> Obj:
    """An API object as the JSON the server sent (camelCase keys, times as text)."""
    if isinstance(obj, dict):
        return obj
    return _serializer().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call,no-any-return]


@functools.cache
def _serializer() -> client.ApiClient:
    """One client for turning models into JSON (a watch event each): it opens no connection."""
    return client.ApiClient()


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name')}"


class Informer:
    """A cache of one resource kept by list and watch; ``handler`` is called on its thread."""

    def __init__(
        self,
        list_fn: Callable[..., Any],
        handler: Handler,
        *,
        args: tuple[Any, ...] = (),
        resync: float = 300.0,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
        name: str = "informer",
    ) -> None:
        self.list_fn, self.args, self.handler = list_fn, args, handler
        self.resync, self.watch_timeout = resync, watch_timeout
        self.backoff = backoff or Backoff()
        self.name = name
        self.cache: dict[str, Obj] = {}
        self.resource_version = ""
        self.synced = threading.Event()
        self.stopping = threading.Event()
        self.relists = 0
        self.errors = 0
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the cache is written here and read from other threads

    def snapshot(self) -> dict[str, Obj]:
        """A copy of the cache (key ``namespace/name``), safe to read while the watch runs."""
        with self._lock:
            return dict(self.cache)

    def start(self) -> Informer:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _list(self) -> None:
        raw = self.list_fn(*self.args)
        listed = plain(raw)
        fresh = {_key(o): o for o in listed.get("items", [])}
        for key, obj in fresh.items():
            old = self.cache.get(key)
            if old is None:
                self.handler("ADDED", obj)
            elif old.get("metadata", {}).get("resourceVersion") != obj.get("metadata", {}).get(
                "resourceVersion"
            ):
                self.handler("MODIFIED", obj)
        for key in set(self.cache) - set(fresh):  # deleted while no watch ran: a list proves it
            self.handler("DELETED", self.cache[key])
        with self._lock:
            self.cache = fresh
        self.resource_version = listed["metadata"]["resourceVersion"]
        self.relists += 1
        self.synced.set()

    def run(self) -> None:
        next_resync = time.monotonic() + self.resync
        need_list = True
        while not self.stopping.is_set():
            try:
                if need_list:
                    self._list()
                    need_list = False
                    self.backoff.reset()
                self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                stream = self._watch.stream(  # type: ignore[no-untyped-call]
                    self.list_fn,
                    *self.args,
                    resource_version=self.resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=min(self.watch_timeout, max(1, int(next_resync - time.monotonic()))),
                )
                for event in stream:
                    kind, obj = event["type"], event["object"]
                    obj = plain(obj)
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            log.info("watch expired: listing again", extra={"informer": self.name})
                            need_list = True
                            break
                        raise RuntimeError(f"watch error: {obj.get('message')}")
                    self.resource_version = obj["metadata"]["resourceVersion"]
                    if kind == "BOOKMARK":
                        continue
                    with self._lock:
                        if kind == "DELETED":
                            self.cache.pop(_key(obj), None)
                        else:
                            self.cache[_key(obj)] = obj
                    self.handler(kind, obj)
                    if self.stopping.is_set():
                        return
                if time.monotonic() >= next_resync:
                    for obj in self.snapshot().values():
                        self.handler("RESYNC", obj)
                    next_resync = time.monotonic() + self.resync
            except client.ApiException as exc:
                need_list = need_list or exc.status == 410
                self._failed(exc)
            except Exception as exc:  # the API server gone, a reset connection: keep the cache
                need_list = True
                self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        delay = self.backoff.next()
        log.warning(
            "API unreachable or refusing: keeping the cache",
            extra={"informer": self.name, "error": str(exc)[:200], "retry_in": round(delay, 2)},
        )
        self.stopping.wait(delay)


def update_status(
    get: Callable[[], Obj],
    replace: Callable[[Obj], Obj],
    change: Callable[[Obj], Obj | None],
    attempts: int = 5,
) -> Obj | None:
    """``change`` the latest object (None: nothing to write) and write it with the resourceVersion
    read; on 409 read again and retry. Returns what was written, or None."""
    for _ in range(attempts):
        current = get()
        new = change(current)
        if new is None:
            return None
        try:
            return replace(new)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    raise RuntimeError(f"status not written after {attempts} conflicts")


def _ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class LeaderElector:
    """Leader election on the Lease ``namespace/name`` as ``identity`` (client-go's rules)."""

    def __init__(
        self,
        api: client.CoordinationV1Api,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = (
            lease_duration,
            renew_deadline,
            retry_period,
        )
        self.on_started, self.on_stopped, self.clock = on_started, on_stopped, clock
        self.leading = threading.Event()
        self.stopping = threading.Event()
        self.transitions = 0
        self._thread: threading.Thread | None = None

    def _micro(self, t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def try_acquire_or_renew(self) -> bool:
        now = self.clock()
        spec: Obj = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "renewTime": self._micro(now),
        }
        api: Any = self.api
        try:
            lease = plain(api.read_namespaced_lease(self.name, self.namespace))
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec, "acquireTime": self._micro(now), "leaseTransitions": 0},
            }
            try:
                api.create_namespaced_lease(self.namespace, body)
                return True
            except client.ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
        held: Obj = lease.get("spec") or {}
        holder = held.get("holderIdentity")
        renewed = _ts(held.get("renewTime"))
        duration = int(held.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and renewed and renewed + timedelta(seconds=duration) > now:
            return False  # someone else holds an unexpired lease
        taking = holder != self.identity
        body = {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": lease["metadata"]["resourceVersion"],
            },
            "spec": {
                **spec,
                "acquireTime": self._micro(now) if taking else held.get("acquireTime"),
                "leaseTransitions": int(held.get("leaseTransitions") or 0) + (1 if taking else 0),
            },
        }
        try:
            api.replace_namespaced_lease(self.name, self.namespace, body)
            return True
        except client.ApiException as exc:
            if exc.status == 409:  # another replica wrote first
                return False
            raise

    def run(self) -> None:
        last_renew = 0.0
        while not self.stopping.is_set():
            try:
                ok = self.try_acquire_or_renew()
            except Exception as exc:  # the API server unreachable: cannot renew
                log.warning("lease not renewed", extra={"lease": self.name, "error": str(exc)[:200]})
                ok = False
            mono = time.monotonic()
            if ok:
                last_renew = mono
                if not self.leading.is_set():
                    self.leading.set()
                    self.transitions += 1
                    log.info("started leading", extra={"lease": self.name, "identity": self.identity})
                    self.on_started()
            elif self.leading.is_set() and mono - last_renew > self.renew_deadline:
                self.leading.clear()
                log.warning("stopped leading: lease not renewed in time", extra={"lease": self.name})
                self.on_stopped()
            self.stopping.wait(self.retry_period)
        if self.leading.is_set():
            self.leading.clear()
            self.on_stopped()

    def start(self) -> LeaderElector:
        self._thread = threading.Thread(target=self.run, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """A client from ``kubeconfig``, or (None) from the pod's service account, as in a cluster.
    Raises ``OSError`` (``ConfigError`` to the CLI) when neither can be read."""
    from kubernetes import config

    try:
        if kubeconfig is None:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        return config.new_client_from_config(kubeconfig)  # type: ignore[no-untyped-call,no-any-return]
    except config.ConfigException as exc:
        raise OSError(
            f"cannot use {'the in-cluster configuration' if kubeconfig is None else kubeconfig}: {exc}"
        ) from None


def custom_objects(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def coordination(api: client.ApiClient) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(api)


class EventRecorder:
    """Events (``core/v1``) about objects, as ``kubectl describe`` lists them: one Event per
    (object, reason, message), its ``count`` and ``lastTimestamp`` moved on a repeat (as
    client-go's recorder aggregates). Cluster-scoped objects' Events go to ``namespace``. An
    Event that cannot be written is dropped with a log line: it never holds up the work."""

    def __init__(self, api: Any, component: str, host: str = "", namespace: str = "default") -> None:
        self.api, self.component, self.host, self.namespace = api, component, host, namespace
        self._seen: dict[tuple[str, str, str], tuple[str, int]] = {}  # -> (event name, count)
        self._lock = threading.Lock()

    def record(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = (str(meta.get("uid") or meta.get("name")), reason, message)
        with self._lock:
            name, count = self._seen.get(key, ("", 0))
            try:
                if name:
                    body = {"count": count + 1, "lastTimestamp": now}
                    self.api.patch_namespaced_event(name, self.namespace, body)
                    self._seen[key] = (name, count + 1)
                    return
                name = f"{meta.get('name')}.{time.time_ns():x}"
                event = {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": name, "namespace": meta.get("namespace") or self.namespace},
                    "involvedObject": {
                        "apiVersion": obj.get("apiVersion"),
                        "kind": obj.get("kind"),
                        "name": meta.get("name"),
                        "uid": meta.get("uid"),
                        **({"namespace": meta["namespace"]} if meta.get("namespace") else {}),
                    },
                    "type": type_,
                    "reason": reason,
                    "message": message[:1024],
                    "count": 1,
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "source": {"component": self.component, **({"host": self.host} if self.host else {})},
                    "reportingComponent": self.component,
                    "reportingInstance": self.host or self.component,
                }
                self.api.create_namespaced_event(meta.get("namespace") or self.namespace, event)
                self._seen[key] = (name, 1)
            except Exception as exc:  # an Event is worth a log line, never a failed reconcile
                log.warning("event not written", extra={"reason": reason, "error": str(exc)[:200]})


def version_probe(api: client.ApiClient, timeout: float = 2.0) -> Callable[[], str | None]:
    """A call of ``/version`` as the doctor's API check makes it: None when answered, else why."""
    version = client.VersionApi(api)

    def probe() -> str | None:
        try:
            version.get_code(_request_timeout=timeout)
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return None

    return probe
