"""Ask a member pod's geoserver a few read-only commands through the API server's pod
``portforward`` subresource (``kubectl geocluster report``).

Why not the pod proxy: ``pods/<pod>:<port>/proxy`` is HTTP, and the API server removes the
Authorization header it authenticated the caller with, so a member's password cannot reach it.
A port-forward is a byte stream to the pod's port, so the conversation is the one ``redis-cli
-a`` has: ``AUTH``, ``OUTPUT json``, then each command; each reply is the JSON text the HTTP
API would give. With TLS the stream is wrapped in TLS verified by the pod's DNS name (and
presenting the TLS Secret's certificate when the members require client certificates).

Transport: ``kubernetes.stream.portforward`` (the official client; a WebSocket upgrade of
``GET /api/v1/namespaces/<ns>/pods/<pod>/portforward?ports=<port>``, subprotocol
``v4.channel.k8s.io``: per port a data channel 2i and an error channel 2i+1, each opened by a
frame holding the port as uint16 little-endian; a forward the kubelet cannot make is a message
on the error channel and the end of the stream). The caller needs RBAC ``get`` and ``create``
on ``pods/portforward`` (``get`` is what a WebSocket upgrade was authorized as before
Kubernetes 1.35, ``create`` what 1.35 and later check); refusals come back as
:class:`ForwardError` with the API server's status and message.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from typing import Any

import hiredis

log = logging.getLogger(__name__)
READ_CHUNK = 65536


class ForwardError(Exception):
    """The member could not be asked: ``status`` is the API server's HTTP status (0 when the
    refusal did not come from it: the kubelet's error channel, TLS, AUTH, a timeout)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def _status_message(body: Any) -> str:
    """The message of a Kubernetes Status body (bytes or str), else what the body is."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        status = json.loads(text)
        if isinstance(status, dict) and status.get("kind") == "Status" and status.get("message"):
            return str(status["message"])
    except ValueError:
        pass
    return "no WebSocket upgrade (is this a Kubernetes API server?)"


def open_forward(api_client: Any, namespace: str, pod: str, port: int, timeout: float = 10.0) -> Any:
    """A ``kubernetes.stream.ws_client.PortForward`` to ``pod:port`` (its own proxy thread).

    The client's WebSocket connect has no timeout, so it runs in a daemon thread that is given
    up after ``timeout`` s (an API server that never answers the upgrade is an error, not a
    hang; the thread ends with the process)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import portforward

    core = client.CoreV1Api(api_client)
    done: dict[str, Any] = {}

    def connect() -> None:
        try:
            done["forward"] = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace,
                                          ports=str(port))  # fmt: skip
        except BaseException as exc:  # handed to the caller's thread
            done["error"] = exc

    thread = threading.Thread(target=connect, name=f"port-forward {pod}:{port}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ForwardError(f"cannot open a port-forward: no answer from the API server in {timeout:g} s")
    exc = done.get("error")
    if isinstance(exc, ApiException):  # the client turns every failure into ApiException(status=0)
        cause = exc.__context__  # websocket-client's WebSocketBadStatusException, when HTTP said no
        status = getattr(cause, "status_code", None)
        if status:
            raise ForwardError(f"{status} {_status_message(getattr(cause, 'resp_body', b''))}",
                               status) from None
        raise ForwardError(f"cannot open a port-forward: {exc.reason}") from None
    if exc is not None:
        raise exc
    return done["forward"]


def _command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Resp:
    """One blocking RESP conversation over a connected socket (hiredis parses the replies)."""

    def __init__(self, sock: socket.socket, why_closed: Any):
        self.sock, self.reader, self.why_closed = sock, hiredis.Reader(), why_closed

    def ask(self, *args: str) -> Any:
        try:
            self.sock.sendall(_command(*args))
            while (reply := self.reader.gets()) is False:
                data = self.sock.recv(READ_CHUNK)
                if not data:
                    raise ConnectionResetError
                self.reader.feed(data)
        except TimeoutError:
            raise ForwardError(f"{args[0]}: no reply in time") from None
        except OSError as exc:  # the forward ended (the kubelet's error channel says why) or reset
            # (an EPIPE must not escape: click would take it for a closed stdout and exit 1)
            why = self.why_closed()
            raise ForwardError(why or f"{args[0]}: the connection ended ({str(exc) or 'closed'})") from None
        return reply


def ask_member(api_client: Any, namespace: str, pod: str, port: int, commands: tuple[str, ...],
               password: str | None = None, tls: ssl.SSLContext | None = None,
               server_name: str | None = None, timeout: float = 10.0) -> dict[str, str]:
    """{command: the member's JSON reply text} for argument-less read-only commands."""
    forward = open_forward(api_client, namespace, pod, port, timeout)
    local = forward.socket(port)._socket  # the plain end of the client's socketpair
    local.settimeout(timeout)
    conn: socket.socket = local
    try:
        if tls is not None:
            try:
                conn = tls.wrap_socket(local, server_hostname=server_name)
            except (ssl.SSLError, OSError) as exc:
                raise ForwardError(forward.error(port) or f"TLS: {exc}") from None
        resp = _Resp(conn, lambda: forward.error(port))
        if password:
            reply = resp.ask("AUTH", password)
            if isinstance(reply, hiredis.ReplyError):
                raise ForwardError(f"AUTH: {reply}")
        resp.ask("OUTPUT", "json")
        out = {}
        for command in commands:
            reply = resp.ask(command)
            out[command] = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        return out
    finally:
        conn.close()
        forward.close()
        log.debug("port-forward closed", extra={"pod": pod, "port": port})
