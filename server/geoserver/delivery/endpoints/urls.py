"""Endpoint URLs as Tile38 writes them, parsed into values (pure: no I/O, no broker client).

SETHOOK validates each URL of its comma-separated list with `parse_endpoint`, and the worker
parses the same text again to send: the URL is the whole definition of an endpoint. The forms
and parameters follow tidwall/tile38 internal/endpoint/endpoint.go; where Tile38 silently
ignores a parameter it does not know, or turns junk into 0, geoserver refuses the URL with a
reason instead (a typo in `qos=` would otherwise deliver at the wrong QoS without a word).
docs/geofencing-endpoints.md lists every form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit


class EndpointError(ValueError):
    """A URL that is not a usable endpoint; the message says why."""


BUILT = ("http", "https", "redis", "nats", "mqtt", "amqp", "amqps")
# Tile38's other kinds, refused with this reason (docs/geofencing-endpoints.md#not-built)
NOT_BUILT = {
    "kafka": "kafka", "sqs": "sqs", "pubsub": "pubsub (Google Cloud)", "grpc": "grpc",
    "disque": "disque", "cf-queue": "cf-queue (Cloudflare Queues)", "Endpoint=": "Azure Event Hubs",
}
DEFAULT_PORTS = {"redis": 6379, "nats": 4222, "mqtt": 1883}
AMQP_TYPES = ("direct", "fanout", "topic", "headers")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class NatsOptions:
    user: str = ""
    password: str = ""
    token: str = ""
    secure: bool = False  # tls:// instead of nats://
    tls: bool = False  # present tlscert/tlskey as a client certificate
    tls_cert: str = ""
    tls_key: str = ""
    credential: str = ""  # a .creds file (user JWT and nkey seed)
    jetstream: bool = False  # publish with a JetStream acknowledgement


@dataclass(frozen=True)
class MqttOptions:
    qos: int = 0
    retained: bool = False
    ca_cert: str = ""
    cert: str = ""
    key: str = ""


@dataclass(frozen=True)
class AmqpOptions:
    """Tile38's exchange/queue declaration and publish flags, its defaults included."""

    uri: str  # amqp[s]://user:pass@host:port[/vhost], without the queue
    route: str = "tile38"
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    no_wait: bool = False
    mandatory: bool = False
    immediate: bool = False
    delivery_mode: int = 1  # 1 transient, 2 persistent
    priority: int = 0


@dataclass(frozen=True)
class Endpoint:
    """One parsed endpoint. `target` is the redis channel, NATS subject, MQTT topic or AMQP
    queue (and exchange) name; for http(s) the URL itself is the target."""

    kind: str  # http, redis, nats, mqtt, amqp (https and amqps fold into http and amqp)
    url: str
    host: str = ""
    port: int = 0
    target: str = ""
    options: NatsOptions | MqttOptions | AmqpOptions | None = field(default=None, compare=False)


def parse_endpoint(url: str) -> Endpoint:
    """The endpoint of one SETHOOK URL; EndpointError saying what is wrong otherwise."""
    url = url.strip()
    if url.startswith("Endpoint="):
        raise _not_built("Endpoint=")
    scheme, colon, rest = url.partition(":")
    if not colon or not scheme:
        raise EndpointError(f"{url!r}: unknown scheme (want http, https, redis, nats, mqtt or amqp)")
    if scheme == "local":
        raise EndpointError("local:// endpoints are channels: use SETCHAN and SUBSCRIBE")
    if scheme in NOT_BUILT:
        raise _not_built(scheme)
    if scheme not in BUILT:
        raise EndpointError(f"{url!r}: unknown scheme {scheme!r} "
                            "(want http, https, redis, nats, mqtt or amqp)")
    if not rest.startswith("//"):
        raise EndpointError(f"{url!r}: missing the two slashes after {scheme}:")
    if scheme in ("http", "https"):
        return _http(url)
    body, _, query = rest[2:].partition("?")
    authority, *path = body.split("/")
    if not authority:
        raise EndpointError(f"{url!r}: missing host")
    params = _query(url, query)
    if scheme == "redis":
        return _redis(url, authority, path, params)
    if scheme == "nats":
        return _nats(url, authority, path, params)
    if scheme == "mqtt":
        return _mqtt(url, authority, path, params)
    return _amqp(url, scheme, authority, path, params)


def _not_built(kind: str) -> EndpointError:
    return EndpointError(f"{NOT_BUILT[kind]} endpoints are not built in geoserver "
                         "(built: http, https, redis, nats, mqtt, amqp; see docs/geofencing-endpoints.md)")


def _http(url: str) -> Endpoint:
    if url.startswith("https://sqs.") and ".amazonaws.com" in url:  # Tile38's SQS probe
        raise _not_built("sqs")
    parts = urlsplit(url)
    if not parts.hostname:
        raise EndpointError(f"{url!r}: missing host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise EndpointError(f"{url!r}: invalid port") from None
    return Endpoint("http", url, parts.hostname, port, url)


def _unescape(url: str, text: str, what: str) -> str:
    if _ESCAPE.search(text):
        raise EndpointError(f"{url!r}: invalid {what} {text!r} (bad %-escape)")
    return unquote(text)


def _query(url: str, query: str) -> dict[str, str]:
    """Query parameters, the first value of each (as Tile38 reads them)."""
    if _ESCAPE.search(query):
        raise EndpointError(f"{url!r}: invalid query {query!r} (bad %-escape)")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key, value)
    return params


def _host_port(url: str, authority: str, kind: str) -> tuple[str, int]:
    host, colon, port_text = authority.partition(":")
    if not host:
        raise EndpointError(f"{url!r}: missing host")
    if ":" in port_text:
        raise EndpointError(f"{url!r}: invalid {kind} url (want host[:port])")
    if not colon:
        return host, DEFAULT_PORTS[kind]
    return host, _port(url, port_text, kind)


def _port(url: str, text: str, kind: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise EndpointError(f"{url!r}: invalid {kind} url port {text!r}")
    return int(text)


def _check_known(url: str, kind: str, params: dict[str, str], known: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(known))
    if unknown:
        allowed = ", ".join(known) if known else "none"
        raise EndpointError(f"{url!r}: unknown {kind} parameter {unknown[0]!r} (known: {allowed})")


def _bool(url: str, name: str, text: str) -> bool:
    """Tile38's queryBool: 1-9, y..., t... are true; other non-empty text is refused here."""
    low = text.lower()
    if low in ("", "0", "n", "no", "f", "false"):
        return False
    if low[:1] in "123456789yt":
        return True
    raise EndpointError(f"{url!r}: invalid {name} value {text!r} (want true or false)")


def _int(url: str, name: str, text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise EndpointError(f"{url!r}: invalid {name} value {text!r} (want {low}..{high})")
    return int(text)


def _redis(url: str, authority: str, path: list[str], params: dict[str, str]) -> Endpoint:
    """redis://host[:port]/channel: PUBLISH to the channel."""
    host, port = _host_port(url, authority, "redis")
    _check_known(url, "redis", params, ())
    channel = _unescape(url, path[0], "redis channel name") if path else ""
    if not channel:
        raise EndpointError(f"{url!r}: missing redis channel name")
    return Endpoint("redis", url, host, port, channel)


NATS_PARAMS = ("user", "pass", "token", "secure", "tls", "tlscert", "tlskey", "credential", "jetstream")


def _nats(url: str, authority: str, path: list[str], params: dict[str, str]) -> Endpoint:
    """nats://host[:port]/subject?user=&pass=&token=&secure=&tls=&tlscert=&tlskey=&credential=&jetstream="""
    host, port = _host_port(url, authority, "nats")
    _check_known(url, "nats", params, NATS_PARAMS)
    subject = _unescape(url, path[0], "NATS topic name") if path else ""
    if not subject:
        raise EndpointError(f"{url!r}: missing NATS topic name")
    options = NatsOptions(
        user=params.get("user", ""), password=params.get("pass", ""), token=params.get("token", ""),
        secure=_bool(url, "secure", params.get("secure", "")), tls=_bool(url, "tls", params.get("tls", "")),
        tls_cert=params.get("tlscert", ""), tls_key=params.get("tlskey", ""),
        credential=params.get("credential", ""),
        jetstream=_bool(url, "jetstream", params.get("jetstream", "")))
    if options.tls and not (options.tls_cert and options.tls_key):
        raise EndpointError(f"{url!r}: tls=true needs tlscert and tlskey")
    return Endpoint("nats", url, host, port, subject, options)


def _mqtt(url: str, authority: str, path: list[str], params: dict[str, str]) -> Endpoint:
    """mqtt://host[:port]/topic/with/levels?qos=&retained=&cacert=&cert=&key="""
    host, port = _host_port(url, authority, "mqtt")
    _check_known(url, "mqtt", params, ("qos", "retained", "cacert", "cert", "key"))
    topic = "/".join(_unescape(url, part, "MQTT topic name") for part in path)
    if not topic:
        raise EndpointError(f"{url!r}: missing MQTT topic name")
    if "+" in topic or "#" in topic:
        raise EndpointError(f"{url!r}: MQTT topic {topic!r} has a wildcard (+ or #): cannot publish to it")
    retained = params.get("retained", "0")
    if retained not in ("0", "1"):
        raise EndpointError(f"{url!r}: invalid MQTT retained, should be [0, 1]")
    options = MqttOptions(qos=_int(url, "MQTT qos", params.get("qos", "0"), 0, 2), retained=retained == "1",
                          ca_cert=params.get("cacert", ""), cert=params.get("cert", ""),
                          key=params.get("key", ""))
    if bool(options.cert) != bool(options.key):
        raise EndpointError(f"{url!r}: MQTT cert and key go together")
    return Endpoint("mqtt", url, host, port, topic, options)


AMQP_PARAMS = ("route", "type", "durable", "internal", "no_wait", "auto_delete", "immediate",
               "mandatory", "delivery_mode", "priority")


def _amqp(url: str, scheme: str, authority: str, path: list[str], params: dict[str, str]) -> Endpoint:
    """amqp[s]://user:pass@host:port[/vhost]/queue[/]?route=&type=&durable=&... (Tile38's
    namespace form: a second non-empty path part makes the first the vhost)."""
    _check_known(url, "amqp", params, AMQP_PARAMS)
    hostport = authority.rpartition("@")[2]
    host, colon, port_text = hostport.partition(":")
    if not host:
        raise EndpointError(f"{url!r}: missing host")
    port = _port(url, port_text, "amqp") if colon else (5671 if scheme == "amqps" else 5672)
    uri = f"{scheme}://{authority}"
    queue_part = path[0] if path else ""
    if len(path) > 1 and path[1]:
        uri, queue_part = f"{uri}/{path[0]}", path[1]
    queue = _unescape(url, queue_part, "AMQP queue name")
    if not queue:
        raise EndpointError(f"{url!r}: missing AMQP queue name")
    kind = params.get("type", "direct")
    if kind not in AMQP_TYPES:
        raise EndpointError(f"{url!r}: invalid AMQP type {kind!r} (want {', '.join(AMQP_TYPES)})")
    flags = {name: _bool(url, name, params[name])
             for name in ("durable", "internal", "no_wait", "auto_delete", "immediate", "mandatory")
             if name in params}
    options = AmqpOptions(
        uri=uri, route=params.get("route") or "tile38", type=kind,
        delivery_mode=_int(url, "delivery_mode", params.get("delivery_mode", "1"), 1, 2),
        priority=_int(url, "priority", params.get("priority", "0"), 0, 255), **flags)
    return Endpoint("amqp", url, host, port, queue, options)


_SECRET_PARAMS = re.compile(r"([?&](?:pass|token|password)=)[^&]*", re.IGNORECASE)
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^@/]*@", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL for logs: passwords in the userinfo and pass=/token= values replaced by ***."""
    return _SECRET_PARAMS.sub(r"\1***", _USERINFO.sub(r"\1:***@", url))
