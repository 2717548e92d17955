"""A gunicorn worker that reads every request whole before a thread sees it.

gunicorn's own threaded worker hands a connection to a thread as soon as its first bytes
arrive, and the thread then blocks reading the rest: eight clients that send headers and
dribble the body held all 2 × 4 threads and took the service down (issue 16). This
worker keeps gunicorn as the process manager (pre-fork, WEB_CONCURRENCY, graceful
restarts, the post_fork hook) and serves each process with waitress, whose event loop
reads headers and body of every connection without a thread and dispatches a request to
the thread pool only once it is complete. Slow or idle connections then cost a socket
and a buffer, not a thread; and on top of waitress's idle timeout each request must
arrive within a time limit (headers, then headers and body), or the client gets a 408 and
the connection is closed.
"""
from __future__ import annotations

import os
import time

from gunicorn.workers.base import Worker
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

# Defaults: a request's headers must arrive within 10 s, the whole request within 30 s
# (1 MB, the app's largest accepted body, at 35 kB/s); bodies over 16 MB are refused
# unread (the app's own limit, MAX_CONTENT_LENGTH, answers 413 below that).
HEADER_TIMEOUT = 10
REQUEST_TIMEOUT = 30
MAX_REQUEST_BYTES = 16 * 1024 * 1024
REQUEST_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                            b"Content-Type: text/plain\r\nContent-Length: 16\r\n\r\nRequest timeout\n")


class TimedChannel(HTTPChannel):
    """A waitress connection that remembers when the request it is reading began."""

    request_started: float | None = None

    def received(self, data):
        if self.request is None and data:
            self.request_started = time.monotonic()
        return super().received(data)


class TimedServer(TcpWSGIServer):
    """waitress's server on an already-bound (gunicorn's) listening socket, closing
    connections whose request takes too long to arrive."""

    channel_class = TimedChannel
    header_timeout: float = HEADER_TIMEOUT
    request_timeout: float = REQUEST_TIMEOUT

    def maintenance(self, now):
        super().maintenance(now)  # connections idle for channel_timeout
        started_before = time.monotonic()
        for channel in list(self.active_channels.values()):
            request, started = channel.request, channel.request_started
            # (a connection still being answered is left until its response has gone out:
            # a 408 must not land in the middle of it)
            if request is None or started is None or channel.requests or channel.will_close \
                    or channel.close_when_flushed:
                continue
            limit = self.request_timeout if request.headers_finished else self.header_timeout
            if started_before - started > limit:
                # no thread is involved: the half-read request is dropped with a 408
                channel.request = None
                with channel.outbuf_lock:
                    channel.outbufs[-1].append(REQUEST_TIMEOUT_RESPONSE)
                    channel.current_outbuf_count += len(REQUEST_TIMEOUT_RESPONSE)
                    channel.total_outbufs_len += len(REQUEST_TIMEOUT_RESPONSE)
                channel.close_when_flushed = True


class BufferingWorker(Worker):
    """gunicorn worker class (worker_class = "web.buffering.BufferingWorker").

    From gunicorn's settings: threads (request threads per process), worker_connections
    (open connections per process), keepalive (idle seconds before a connection is
    closed) and graceful_timeout. From the environment (checked by web/gunicorn_conf.py):
    WEB_HEADER_TIMEOUT and WEB_REQUEST_TIMEOUT (seconds for a request's headers, and for
    headers plus body, to arrive) and WEB_MAX_REQUEST_BYTES (larger bodies get a 413
    before any of them is buffered).
    """

    def run(self) -> None:
        cfg = self.cfg
        adjustments = Adjustments(
            threads=cfg.threads,
            connection_limit=cfg.worker_connections,
            channel_timeout=max(int(cfg.keepalive), 1),
            # how often timeouts are checked, in seconds
            cleanup_interval=1,
            # poll(2): select(2) stops at 1,024 descriptors
            asyncore_use_poll=True,
            max_request_body_size=_setting("WEB_MAX_REQUEST_BYTES", MAX_REQUEST_BYTES),
            # the app logs one JSON line per request (web/logs.py) and sets its own headers
            ident="story-genius",
            expose_tracebacks=False,
            log_socket_errors=False,
            url_scheme="http",
        )
        socket_map: dict = {}
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(adjustments.threads)
        TimedServer.header_timeout = _setting("WEB_HEADER_TIMEOUT", HEADER_TIMEOUT)
        TimedServer.request_timeout = _setting("WEB_REQUEST_TIMEOUT", REQUEST_TIMEOUT)
        servers = []
        for listener in self.sockets:
            sock = listener.sock
            servers.append(TimedServer(self.wsgi, socket_map, _start=True, _sock=sock, dispatcher=dispatcher,
                                       adj=adjustments, bind_socket=False,
                                       sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname())))
        parent = self.ppid
        while self.alive:
            wasyncore.loop(timeout=0.5, map=socket_map, use_poll=True, count=1)
            self.notify()
            if os.getppid() != parent:
                self.log.info("Parent changed, shutting down: %s", self)
                break
        self._stop(servers, socket_map, dispatcher)

    def _stop(self, servers, socket_map, dispatcher) -> None:
        """Stop accepting, let requests being read or served finish (up to the graceful
        timeout), then stop the threads."""
        for server in servers:
            server.accepting = False
            wasyncore.dispatcher.close(server)  # this process's listening socket only
        deadline = time.monotonic() + self.cfg.graceful_timeout

        def busy() -> bool:
            return any(channel.requests or channel.total_outbufs_len or channel.request is not None
                       for server in servers for channel in list(server.active_channels.values()))

        while busy() and time.monotonic() < deadline:
            wasyncore.loop(timeout=0.2, map=socket_map, use_poll=True, count=1)
            self.notify()
        dispatcher.shutdown(cancel_pending=True, timeout=max(deadline - time.monotonic(), 0.1))
        for server in servers:
            server.trigger.close()


def _setting(name: str, default: int) -> int:
    """A positive whole-number setting from the environment (checked in gunicorn_conf)."""
    value = os.environ.get(name)
    return int(value) if value else default
