"""A network namespace for the test world: pod-like addresses that are not loopback.

Why: a real Gateway API implementation (Traefik) resolves a backendRef through the Service's
EndpointSlices, and the API server refuses loopback (127.0.0.0/8, ::1) and link-local addresses
in them. So the test creates a network namespace (`ip netns add`, as root), gives its `lo`
addresses such as 10.77.0.2/32, and the model servers listen there; Services and EndpointSlices
point at those addresses, and the gateway runs inside the same namespace so it can reach them.

The rule this module keeps: **all test traffic stays on loopback or inside a namespace the test
created.** The namespace has no link but its own `lo` (no veth, no route out), so nothing in it
can reach any other address; the host only ever talks to it through `Relay`s on 127.0.0.1 whose
other end is a socket created inside the namespace.

Never connect to a namespace address from the host: the host has no route to the namespace, so
without a guard such a connection follows the host's default route out of the machine (measured
here on 2026-11-28: a connect from the host to 10.77.0.2:8080 left by eth0 and was accepted by
something beyond its gateway). Use `expose()`, or a socket from `NetNS.socket()`/`connect()`,
which is created inside.

The guard: while any namespace of ours exists, the host has `ip route replace blackhole
10.77.0.0/16` (GUARD_RANGE, which holds every address a test puts in a namespace: NetNS's
10.77.0.0/24, kwok's pod and node IPs in tests/support/workload.py), so a host connection to a
namespace address fails locally (connect() gets EINVAL) and no packet leaves. `create()` adds it
before the namespace exists and checks `ip route get` says blackhole; `close()` removes it once no
`modelrollout-*` namespace is left (another run's, of any checkout, keeps it). Both happen under
one host-wide lock (LOCK_FILE), so two runs never race on it. A run killed with SIGKILL leaves
the route (the safe direction); the next create()/close() of any run cleans up.
Addresses outside GUARD_RANGE are refused by `create()` and `add_address()`.

How a process or socket gets inside:
- a child process: `NetNS.command(argv)` is `ip netns exec <name> argv...`;
- a socket of this process: `NetNS.socket()` creates it from a short-lived thread that has
  entered the namespace (`setns(2)` moves only the calling thread; a socket stays in the
  namespace it was created in, whichever thread uses it later). The main thread never enters,
  so `ip netns pids` never lists the test process itself.

Names are `modelrollout-<pid>-<hex>`. `NetNS.create()` first deletes namespaces that a crashed
run (its pid gone) left behind, after killing the processes still inside them; `close()` does the
same for its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

PREFIX = "modelrollout-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+$")
_CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
# The namespace's own addresses: any private range will do (nothing outside the namespace routes
# to it, and each namespace has a stack of its own, so concurrent test sessions may reuse them).
DEFAULT_SUBNET = "10.77.0.0/24"
# Every address any test puts inside a namespace is in here; the host blackholes it meanwhile.
GUARD_RANGE = "10.77.0.0/16"
# One lock for the whole host (all checkouts): creating/deleting namespaces and the guard route.
LOCK_FILE = "/run/modelrollout-netns.lock"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _names() -> list[str]:
    listed = _ip("netns", "list", check=False).stdout
    # `ip netns list` prints "name" or "name (id: N)".
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(name: str) -> None:
    """SIGKILL every process whose network namespace is `name` (never this process)."""
    pids = _ip("netns", "pids", name, check=False).stdout.split()
    for pid in (int(p) for p in pids):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _delete(name: str) -> None:
    _kill_inside(name)
    # A killed process may hold the namespace a moment longer; `ip netns delete` unmounts the
    # bind mount either way, and the kernel frees the namespace once its last user is gone.
    _ip("netns", "delete", name, check=False)


def cleanup_leftovers() -> list[str]:
    """Delete the namespaces of test runs that are gone (a crash, a SIGKILL); return their names.
    The guard route stays as long as a namespace of ours exists (`_release_guard()`)."""
    with _host_lock():
        removed = _cleanup_leftovers()
        _release_guard()
    return removed


def _cleanup_leftovers() -> list[str]:
    removed = []
    for name in _names():
        match = _NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _delete(name)
            removed.append(name)
    return removed


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """The host-wide lock around namespace creation/deletion and the guard route."""
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def guard_route(address: str) -> str:
    """What the host's kernel does with a packet to `address`: "blackhole <address> (route
    <range>)" while guarded, else `ip route get`'s own answer (e.g. "<address> via <gw> dev eth0").

    `ip route get` itself answers a blackholed destination with "RTNETLINK answers: Invalid
    argument" (the kernel's EINVAL for a blackhole, the same error connect() gets); that answer
    plus the most specific route of `ip route show match` being the blackhole is what "guarded"
    means here."""
    got = _ip("-j", "route", "get", address, check=False)
    if got.returncode == 0:
        routes = json.loads(got.stdout or "[]")
        route = routes[0] if routes else {}
        return " ".join(
            str(part)
            for part in (
                route.get("dst", address),
                f"via {route['gateway']}" if route.get("gateway") else "",
                f"dev {route['dev']}" if route.get("dev") else "",
                route.get("type", ""),
            )
            if part
        )
    error = got.stderr.strip()
    if "Invalid argument" not in error:
        return error
    matches = json.loads(_ip("-j", "route", "show", "match", address).stdout or "[]")

    def prefix(route: dict[str, object]) -> int:
        dst = str(route.get("dst", ""))
        return -1 if dst == "default" else ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32").prefixlen

    best = max(matches, key=prefix, default={})
    if best.get("type") == "blackhole":
        return f"blackhole {address} (route {best['dst']})"
    return error


def _ensure_guard() -> None:
    """Blackhole GUARD_RANGE on the host, and check that the kernel now says so (else raise:
    no namespace is created unguarded). A host route of its own inside the range (the machine's,
    not ours) is refused rather than replaced: a more specific one would win over the blackhole."""
    theirs = [
        route
        for route in json.loads(_ip("-j", "route", "show", "root", GUARD_RANGE).stdout or "[]")
        if not (route.get("type") == "blackhole" and route.get("dst") == GUARD_RANGE)
    ]
    if theirs:
        raise RuntimeError(f"the host already routes inside {GUARD_RANGE}: {theirs}; the tests need that range unused")
    _ip("route", "replace", "blackhole", GUARD_RANGE)
    # The namespace's own addresses, kwok's pod range and its node address.
    for probe in ("10.77.0.2", "10.77.1.1", "10.77.2.1"):
        route = guard_route(probe)
        if not route.startswith("blackhole"):
            raise RuntimeError(f"host route to {probe} is not a blackhole after adding it: {route!r}")


def _release_guard() -> None:
    """Remove the guard route when no namespace of ours (any run's) is left."""
    if not any(name.startswith(PREFIX) for name in _names()):
        _ip("route", "del", "blackhole", GUARD_RANGE, check=False)


def _check_guarded(network: ipaddress.IPv4Network | str) -> None:
    net = ipaddress.IPv4Network(network, strict=False)
    if not net.subnet_of(ipaddress.IPv4Network(GUARD_RANGE)):
        raise ValueError(f"{net} is outside {GUARD_RANGE}, the range the host blackholes while namespaces exist")


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@dataclass
class NetNS:
    """A network namespace this test run created, with addresses on its `lo`."""

    name: str
    addresses: list[str] = field(default_factory=list)
    _subnet: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network(DEFAULT_SUBNET))
    _relays: list[Relay] = field(default_factory=list)

    @classmethod
    def create(cls, *, subnet: str = DEFAULT_SUBNET) -> NetNS:
        _check_guarded(subnet)
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        with _host_lock():
            _cleanup_leftovers()
            _ensure_guard()  # before the namespace exists
            _ip("netns", "add", name)
        ns = cls(name=name, _subnet=ipaddress.IPv4Network(subnet))
        try:
            _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            ns.close()
            raise
        return ns

    @property
    def path(self) -> str:
        return f"{NETNS_RUN_DIR}/{self.name}"

    def add_address(self, address: str | None = None) -> str:
        """Add an address (the next free one of the subnet, from .2, when None) to the namespace's
        `lo` and return it; processes inside can bind it and reach it."""
        if address is None:
            used = set(self.addresses)
            address = next(str(a) for a in list(self._subnet.hosts())[1:] if str(a) not in used)
        _check_guarded(f"{address}/32")
        _ip("-n", self.name, "addr", "add", f"{address}/32", "dev", "lo")
        self.addresses.append(address)
        return address

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace (for subprocess)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run_inside(self, fn: Callable[[], object]) -> object:
        """Call `fn` on a thread that has entered the namespace; return what it returned."""
        result: dict[str, object] = {}

        def target() -> None:
            try:
                with open(self.path) as ns:
                    _setns(ns.fileno())
                result["value"] = fn()
            except BaseException as exc:  # re-raised on the caller's thread
                result["error"] = exc

        # The thread ends inside the namespace: it is never reused, so nothing else runs there.
        thread = threading.Thread(target=target, name=f"netns-{self.name}", daemon=True)
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        return result.get("value")

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket in the namespace, usable from any thread."""
        sock = self.run_inside(lambda: socket.socket(family, kind))
        assert isinstance(sock, socket.socket)
        return sock

    def listen(self, address: str, port: int = 0, backlog: int = 128) -> socket.socket:
        """A listening TCP socket bound to `address`:`port` inside the namespace."""
        sock = self.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return sock

    def connect(self, address: str, port: int, timeout: float = 10.0) -> socket.socket:
        """A TCP connection from inside the namespace to `address`:`port` (inside it too), in
        blocking mode once connected (a relay's pumps wait on it; set a timeout to bound reads)."""
        sock = self.socket()
        try:
            sock.settimeout(timeout)
            sock.connect((address, port))
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        return sock

    def expose(self, address: str, port: int) -> Relay:
        """Host 127.0.0.1:<free port> -> `address`:`port` inside the namespace (e.g. the
        gateway's entry point, for the load generator on the host). Stopped by close()."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        relay = Relay(listener, lambda: self.connect(address, port))
        self._relays.append(relay.start())
        return relay

    def import_port(self, host_port: int, inside_port: int = 0) -> Relay:
        """127.0.0.1:`inside_port` inside the namespace -> the host's 127.0.0.1:`host_port` (e.g.
        the API server, for the gateway inside). A free port when 0. Stopped by close()."""
        listener = self.listen("127.0.0.1", inside_port)
        relay = Relay(listener, lambda: socket.create_connection(("127.0.0.1", host_port), timeout=10.0))
        self._relays.append(relay.start())
        return relay

    def close(self) -> None:
        """Stop the relays, kill what runs inside and delete the namespace. Idempotent."""
        for relay in self._relays:
            relay.stop()
        self._relays.clear()
        with _host_lock():
            _delete(self.name)
            _cleanup_leftovers()
            _release_guard()


@contextlib.contextmanager
def network_namespace(*, subnet: str = DEFAULT_SUBNET) -> Iterator[NetNS]:
    ns = NetNS.create(subnet=subnet)
    try:
        yield ns
    finally:
        ns.close()


class Relay:
    """Accepts on `listener`; for each connection opens `connect()` and copies bytes both ways."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
        self.listener, self._connect = listener, connect
        self.port: int = listener.getsockname()[1]
        self._stop = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect()
            except OSError:
                downstream.close()
                continue
            # No Nagle delay: a relayed request or answer written in two pieces (headers, then body)
            # would otherwise wait for the peer's delayed ACK, 40 ms per request.
            for sock in (downstream, upstream):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._open.update((downstream, upstream))
            pumps_left = [2]  # the pair is closed when both directions are done
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink, pumps_left), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pumps_left: list[int]) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            # Half-close: the other direction may still be answering.
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            with self._lock:
                pumps_left[0] -= 1
                last = pumps_left[0] == 0
                if last:
                    self._open.discard(source)
                    self._open.discard(sink)
            if last:
                source.close()
                sink.close()


def wait_listening(ns: NetNS, address: str, port: int, timeout: float = 30.0) -> None:
    """Until something inside the namespace accepts connections on `address`:`port`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ns.connect(address, port, timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
