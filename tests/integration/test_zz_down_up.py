"""`down` stops every service and leaves nothing listening; `up` brings them back.

Named to run last in this folder: it restarts the services the other tests use.
"""

from __future__ import annotations

import socket

from cloudfree.local import stack


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_down_leaves_nothing_listening_then_up_restores(local_env):
    s = stack()
    ep = s.endpoints()
    ports = (ep.ministack_port, ep.postgres_port, ep.stacapi_port)
    assert all(_listening(p) for p in ports)
    s.down()
    assert not any(_listening(p) for p in ports)
    health = s.health()
    assert not any(h["up"] for h in health.values())
    assert "make up" in health["ministack"]["fix"]
    again = s.up()
    assert (again.ministack_port, again.postgres_port, again.stacapi_port) == ports
    assert all(h["up"] for h in s.health().values())
