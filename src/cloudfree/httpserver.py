"""A small HTTP server on ``host:port`` (0: a free port), in a background thread or the
foreground: what the map viewer (``viewer.server``) and the STAC fault proxy
(``local.faultproxy``) both run. Developer and operator tooling: no Lambda imports it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class BackgroundServer:
    """``ThreadingHTTPServer`` with daemon request threads; ``start`` serves from a daemon
    thread, ``serve_forever`` from the caller's, ``stop`` shuts down and closes the socket."""

    #: The background thread's name (seen in tracebacks and thread dumps).
    thread_name = "cloudfree-http"
    #: The server class (a subclass may quiet some request errors).
    server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self._server = self.server_class((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` (no trailing slash) of the bound socket."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=self.thread_name)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
