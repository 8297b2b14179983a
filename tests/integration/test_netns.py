"""tests/support/netns.py: the network namespace the test world's model servers and gateway live in.

Runs as root (as the whole suite does: `ip netns` needs it). No cluster. Every connection here is
to loopback or from a socket created inside the namespace, except one: the guard test connects
from the host to a namespace address, and only after `ip route get` has shown the host's
blackhole route for it (without the guard that connection would leave through the host's default
route: netns.py says why).
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import subprocess
import threading
import time

import pytest

from tests.support.netns import (
    GUARD_RANGE,
    PREFIX,
    NetNS,
    _names,
    cleanup_leftovers,
    guard_route,
    network_namespace,
)


def _echo_server(listener: socket.socket, tag: bytes) -> None:
    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(1024)
                conn.sendall(tag + b":" + data)

    threading.Thread(target=serve, daemon=True).start()


def _ask(sock: socket.socket, message: bytes) -> bytes:
    with sock:
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        return sock.recv(1024)


def test_addresses_inside_are_reachable_from_inside_and_through_relays_only() -> None:
    with network_namespace() as ns:
        a, b = ns.add_address(), ns.add_address()
        assert (a, b) == ("10.77.0.2", "10.77.0.3")
        shown = subprocess.run(ns.command(["ip", "-brief", "addr", "show", "lo"]), capture_output=True, text=True)
        assert f"{a}/32" in shown.stdout and f"{b}/32" in shown.stdout
        # The namespace has no link but lo: no route out of it.
        links = subprocess.run(ns.command(["ip", "-brief", "link"]), capture_output=True, text=True).stdout
        assert [line.split()[0] for line in links.splitlines()] == ["lo"], links
        _echo_server(ns.listen(a, 8080), b"a")
        _echo_server(ns.listen(b, 8080), b"b")
        # From a socket created inside.
        assert _ask(ns.connect(a, 8080), b"hi") == b"a:hi"
        assert _ask(ns.connect(b, 8080), b"hi") == b"b:hi"
        # From the host, through a relay on the host's loopback.
        relay = ns.expose(b, 8080)
        assert _ask(socket.create_connection(("127.0.0.1", relay.port)), b"via relay") == b"b:via relay"
        # And the other way: a host loopback server, reached from inside the namespace.
        host = socket.create_server(("127.0.0.1", 0))
        _echo_server(host, b"host")
        inward = ns.import_port(host.getsockname()[1])
        assert _ask(ns.connect("127.0.0.1", inward.port), b"in") == b"host:in"
        host.close()


def test_close_kills_what_runs_inside_and_deletes_the_namespace() -> None:
    ns = NetNS.create()
    child = subprocess.Popen(ns.command(["sleep", "300"]))
    deadline = time.monotonic() + 10
    while str(child.pid) not in subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "the child never showed up inside the namespace"
        time.sleep(0.05)
    ns.close()
    assert child.wait(timeout=10) == -9
    assert ns.name not in _names()
    ns.close()  # idempotent


def test_leftovers_of_dead_runs_are_removed_and_live_ones_kept() -> None:
    dead = f"{PREFIX}999999999-0dead0"  # no such pid (above pid_max)
    subprocess.run(["ip", "netns", "add", dead], check=True)
    with network_namespace() as ours:  # create() cleans up first
        assert dead not in _names()
        assert ours.name in _names()
        assert cleanup_leftovers() == []  # our own, alive, is kept
        assert ours.name in _names()
    assert ours.name not in _names()


def _others_exist(*ours: NetNS) -> bool:
    """Another run's namespace (another checkout's tests, say) keeps the guard route up."""
    return any(n.startswith(PREFIX) and n not in {ns.name for ns in ours} for n in _names())


def test_the_host_cannot_reach_a_namespace_address_while_a_namespace_exists() -> None:
    with network_namespace() as ns:
        address = ns.add_address()
        _echo_server(ns.listen(address, 8080), b"a")
        assert _ask(ns.connect(address, 8080), b"hi") == b"a:hi"  # it does listen, inside
        # The kernel's own answer for the host, checked BEFORE the host connects: a blackhole, not
        # "via <gateway> dev eth0" (then the SYN would leave the machine).
        route = guard_route(address)
        assert route.startswith(f"blackhole {address}"), route
        assert " dev eth" not in route and " via " not in route, route
        host = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        host.settimeout(2.0)
        with host, pytest.raises(OSError) as refused:
            host.connect((address, 8080))
        # Failed locally: a blackhole route makes connect() fail with EINVAL at once; never a
        # timeout (that would mean a SYN went somewhere and nothing answered).
        assert not isinstance(refused.value, TimeoutError)
        assert refused.value.errno == errno.EINVAL, refused.value
        # Every address a test may put inside is covered (kwok's pod IPs and node IP too).
        for other in ("10.77.1.5", "10.77.2.1", "10.77.255.254"):
            assert guard_route(other).startswith(f"blackhole {other}"), other
    if not _others_exist():
        # Gone with the last namespace: the host's routing is as it was.
        assert not guard_route(address).startswith("blackhole")


def test_the_guard_stays_while_any_namespace_exists_and_goes_with_the_last() -> None:
    first, second = NetNS.create(), NetNS.create()
    try:
        first.close()
        assert guard_route("10.77.0.2").startswith("blackhole"), "second namespace still exists"
    finally:
        second.close()
    if not _others_exist():
        assert not guard_route("10.77.0.2").startswith("blackhole")
        shown = subprocess.run(["ip", "route", "show", "type", "blackhole"], capture_output=True, text=True).stdout
        assert GUARD_RANGE not in shown, shown


def test_addresses_outside_the_guarded_range_are_refused() -> None:
    with pytest.raises(ValueError, match=re.escape(f"outside {GUARD_RANGE}")):
        NetNS.create(subnet="10.78.0.0/24")
    with network_namespace() as ns:
        with pytest.raises(ValueError, match=re.escape(f"outside {GUARD_RANGE}")):
            ns.add_address("192.168.7.2")
        assert ns.add_address("10.77.1.9") == "10.77.1.9"
        assert ipaddress.IPv4Address("10.77.1.9") in ipaddress.IPv4Network(GUARD_RANGE)
