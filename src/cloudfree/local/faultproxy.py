"""A small fault-injecting HTTP proxy to put in front of the local STAC API (tests only).

It forwards every request to ``upstream`` unchanged (the ``Host`` header included, so
stac-fastapi builds its links, ``search`` among them, on the proxy's address, and upstream
addresses in answers are rewritten to the proxy's: pystac-client keeps talking to the proxy),
except the requests a queued :class:`Fault` matches: those get an
HTTP error (429 with ``Retry-After``, 500, ...), a malformed body, or a stall longer than the
client's timeout. Faults are queued from the test process (the proxy runs in a thread of it),
while the deployed Lambdas reach it over HTTP like any STAC API.

    proxy = FaultProxy("http://127.0.0.1:34343").start()
    proxy.inject(Fault(status=500), times=2)         # a burst of two 500s, then normal answers
    proxy.inject(Fault(body=b"{not json"))           # every matching request, until cleared
    proxy.clear(); proxy.stop()

Standard library only.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from ..httpserver import BackgroundServer

#: Request headers not forwarded (hop-by-hop, RFC 9110 7.6.1).
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade"}


@dataclass(frozen=True)
class Fault:
    """What the proxy answers instead of forwarding.

    ``status``: an HTTP error with a JSON body (``headers`` added, e.g. ``Retry-After``);
    ``body``: a 200 answer with these bytes (malformed JSON); ``delay``: seconds to wait before
    forwarding (a stall longer than the client's timeout). ``path`` is a prefix the request path
    must start with (``/search`` spares the landing page); ``method`` restricts the method;
    ``match`` is a substring the request body must hold (a tile's ``MGRS-33UUP``), so faults for
    several tiles can run side by side.
    """

    status: int | None = None
    body: bytes | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/"
    method: str | None = None
    match: bytes | None = None

    @property
    def kind(self) -> str:
        if self.status is not None:
            return f"status-{self.status}"
        if self.body is not None:
            return "malformed"
        return "delay"

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        return (path.startswith(self.path) and self.method in (None, method)
                and (self.match is None or self.match in body))


class FaultProxy(BackgroundServer):
    """The proxy server; ``url`` is what the STAC API URL of a deployment points at."""

    thread_name = "stac-fault-proxy"

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0,
                 upstream_timeout: float = 60.0) -> None:
        self.upstream = urlsplit(upstream.rstrip("/"))
        self.upstream_base = f"{self.upstream.scheme}://{self.upstream.netloc}"
        self.upstream_timeout = upstream_timeout
        self._faults: list[list] = []  # [fault, remaining times or None]
        self._lock = threading.Lock()
        self.injected: list[tuple[str, str, str, bytes]] = []  # (kind, method, path, body)
        self.forwarded: list[tuple[str, str, int, bytes]] = []  # (method, path, status, body)
        super().__init__(self._handler(), host, port)

    @property
    def url(self) -> str:
        return self.base_url

    def inject(self, fault: Fault, times: int | None = None) -> None:
        """Queue a fault for the next ``times`` matching requests (``None``: until cleared)."""
        with self._lock:
            self._faults.append([fault, times])

    def clear(self) -> None:
        """Drop the queued faults and the records of what happened."""
        with self._lock:
            self._faults.clear()
            self.injected.clear()
            self.forwarded.clear()

    def _take(self, method: str, path: str, body: bytes) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault, remaining = entry
                if fault.matches(method, path, body) and remaining != 0:
                    if remaining is not None:
                        entry[1] = remaining - 1
                    self.injected.append((fault.kind, method, path, body))
                    return fault
        return None

    def injected_for(self, match: bytes) -> list[str]:
        """Kinds of the faults injected into requests whose body holds ``match``."""
        with self._lock:
            return [kind for kind, _, _, body in self.injected if match in body]

    def forwarded_for(self, match: bytes) -> list[int]:
        """Upstream statuses of the forwarded requests whose body holds ``match``."""
        with self._lock:
            return [status for _, _, status, body in self.forwarded if match in body]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: the test reads .injected/.forwarded
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._take(self.command, self.path, body)
                try:
                    if fault is not None and fault.delay:
                        time.sleep(fault.delay)  # the client has given up by now
                    if fault is not None and fault.status is not None:
                        doc = (f'{{"code": "InjectedFault", "description": "injected '
                               f'{fault.status}"}}').encode()
                        self._reply(fault.status, doc, {"Content-Type": "application/json",
                                                        **fault.headers})
                        return
                    if fault is not None and fault.body is not None:
                        self._reply(200, fault.body, {"Content-Type": "application/json"})
                        return
                    self._forward(body)
                except OSError:  # the client timed out and went away, or the upstream did
                    pass

            def _forward(self, body: bytes) -> None:
                up = proxy.upstream
                conn = http.client.HTTPConnection(up.hostname, up.port or 80,
                                                  timeout=proxy.upstream_timeout)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                # an upstream that builds links on its own address, not on ``Host``, would
                # send the client around the proxy: point those links back at the proxy
                data = data.replace(proxy.upstream_base.encode(), proxy.url.encode())
                with proxy._lock:
                    proxy.forwarded.append((self.command, self.path, resp.status, body))
                out = {k: v for k, v in resp.getheaders()
                       if k.lower() not in _HOP and k.lower() != "content-length"}
                self._reply(resp.status, data, out)

            do_GET = do_POST = _handle  # noqa: N815 - http.server's naming

        return Handler
