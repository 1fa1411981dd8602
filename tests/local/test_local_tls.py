"""`geocluster up --tls`: a generated CA and member certificates, members on TLS only, followers
verifying their leader, probes over TLS, renewal picked up without a restart, resume keeps TLS."""

from __future__ import annotations

import datetime
import socket
import ssl
import stat
from pathlib import Path

import pytest
import redis
from cryptography import x509
from geocluster.local import LocalCluster
from geocluster.localstate import StateDir
from helpers import wait_until
from local_lib import FAST, condition, manifest, tick_until

pytestmark = pytest.mark.timeout(90)


def tls_client(cluster: LocalCluster, name: str) -> redis.Redis:
    r = redis.Redis(port=cluster.sup.procs[name].port, protocol=2, socket_timeout=5, ssl=True,
                    ssl_ca_certs=cluster.sup.ca_file)
    r.response_callbacks.clear()
    return r


def served_serial(cluster: LocalCluster, name: str) -> int:
    ctx = ssl.create_default_context(cafile=cluster.sup.ca_file)
    with socket.create_connection(("127.0.0.1", cluster.sup.procs[name].port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
async def tls_cluster(tmp_path: Path, clock):
    cluster = LocalCluster(manifest(tmp_path, FAST), StateDir(tmp_path / "state"), clock, tls=True)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


async def test_tls_cluster_replicates_and_is_ready(tls_cluster, clock):
    cluster = tls_cluster
    tls_dir = cluster.state.path / "tls"
    assert cluster.sup.ca_file == str(tls_dir / "ca.crt")
    for name in ("ca", "leader", "follower-1", "follower-2"):
        assert stat.S_IMODE((tls_dir / f"{name}.key").stat().st_mode) == 0o600
    leader = tls_client(cluster, "leader")
    for i in range(20):
        leader.execute_command("SET", "fleet", f"truck{i}", "POINT", 33 + i / 100, -115)

    def replicated():
        return all(tls_client(cluster, f).execute_command("SCAN", "fleet", "COUNT") == 20
                   for f in ("follower-1", "follower-2"))

    await tick_until(cluster, lambda: condition(cluster.status, "Ready").get("status") == "True"
                     and replicated(), clock, what="Ready + replicated over TLS")
    assert all(m.reachable for m in cluster.members)  # the probes connect with the CA
    assert cluster.state.read_cluster()["tls"] is True
    with pytest.raises(redis.ConnectionError):  # TLS only: a plaintext client is turned away
        redis.Redis(port=cluster.sup.leader.port, socket_timeout=5).ping()


async def test_renewed_certificates_are_served_without_a_restart(tls_cluster):
    cluster = tls_cluster
    tls = cluster.sup.tls
    assert tls is not None
    members = list(cluster.sup.procs)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=80)
    assert tls.ensure(members) == []  # nothing due now ...
    assert tls.due(members, later) == members  # ... all within RENEW_BEFORE of their end by then
    before = served_serial(cluster, "leader")
    pid = cluster.sup.leader.popen.pid  # type: ignore[union-attr]
    tls.cert_file("leader").unlink()  # due now: issued again
    assert tls.ensure(members) == ["leader"]
    wait_until(lambda: served_serial(cluster, "leader") != before, timeout=15,
               message="the renewed certificate (tls-reload-interval)")
    assert cluster.sup.leader.popen.pid == pid  # type: ignore[union-attr]
    assert tls_client(cluster, "follower-1").ping() == b"PONG"


async def test_resume_keeps_tls(tmp_path: Path, clock):
    state = StateDir(tmp_path / "state")
    first = LocalCluster(manifest(tmp_path, FAST), state, clock, tls=True)
    await first.start()
    ca = Path(first.sup.ca_file or "").read_bytes()
    await first.stop()
    again = LocalCluster(manifest(tmp_path, FAST), state, clock)  # no --tls/--no-tls
    try:
        await again.start()
        assert again.sup.ca_file is not None and Path(again.sup.ca_file).read_bytes() == ca
        assert tls_client(again, "leader").ping() == b"PONG"
    finally:
        await again.stop()
