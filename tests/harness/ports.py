"""Free loopback ports for the servers the harness starts.

Candidates come from below the kernel's ephemeral range: an outgoing connection made
between choosing a port and the server binding it cannot take one of them. They are
random, so two test sessions on one machine rarely even try the same port.
"""

import secrets
import socket
from pathlib import Path

_LOWEST = 15000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, also_free_at: int = 0) -> int:
    """A free port on 127.0.0.1; with also_free_at=N, port+N is free as well.

    SeaweedFS opens a gRPC port at +10000 beside each HTTP port it is given.
    """
    low, high = _LOWEST, _ephemeral_low() - also_free_at
    if high - low < 1000:
        low, high = 1024, 65535 - also_free_at
    for _attempt in range(500):
        port = low + secrets.randbelow(high - low)
        wanted = {port, port + also_free_at}
        if wanted & _handed_out:
            continue
        if all(_bindable(p) for p in wanted):
            _handed_out.update(wanted)
            return port
    raise RuntimeError("No free loopback port found.")
