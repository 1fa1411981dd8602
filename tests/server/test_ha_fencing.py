"""What the operator's fencing relies on (docs/operator.md#high-availability): every member
starts as a follower of the leader its ConfigMap names, the named leader itself included.

- A member started with ``--follow`` its own address never takes a write (clients get
  ``not the leader``; reads get ``catching up to leader``, as on any follower not caught up)
  and says why it follows no one; only FOLLOW no one makes it a leader, and a restart with
  the same flag fences it again, its dataset kept.
- A follower that tried its leader while that one was not leading yet waits out a back-off;
  FOLLOW of the same leader makes it connect at once (the operator sends it after promoting).

Real geoserver processes on 127.0.0.1, real clients.
"""

from __future__ import annotations

import pytest
import redis
from helpers import GeoServer, wait_until


def stats(s: GeoServer) -> dict:
    return s.json("SERVER")["stats"]


def test_a_member_following_itself_refuses_writes_until_told_to_lead(tmp_path):
    s = GeoServer(tmp_path / "m0")
    s.args = ["--follow", f"{s.host}:{s.port}"]
    s.start()
    try:
        with pytest.raises(redis.ResponseError, match="not the leader"):
            s.client().execute_command("SET", "fleet", "t1", "POINT", "33", "-115")
        wait_until(lambda: "cannot follow self" in (stats(s).get("replication_error") or ""),
                   message="the reason it leads no one")  # fmt: skip
        assert s.json("FOLLOW", "no", "one")["ok"]
        s.client().execute_command("SET", "fleet", "t1", "POINT", "33", "-115")
        assert not stats(s).get("following")
    finally:
        s.stop()
    s.start()  # a restarted ex-leader: the flag wins over the saved "follow no one"
    try:
        with pytest.raises(redis.ResponseError, match="not the leader"):
            s.client().execute_command("SET", "fleet", "t2", "POINT", "33", "-115")
        # Tile38's follower rule: no reads before caught up either (clients go elsewhere);
        # its dataset is kept for when the operator names it leader again
        assert s.json("GET", "fleet", "t1")["err"] == "catching up to leader"
        assert stats(s)["num_objects"] == 1
    finally:
        s.stop()


def test_follow_of_the_same_leader_cuts_the_back_off_short(tmp_path):
    leader = GeoServer(tmp_path / "leader")
    leader.args = ["--follow", f"{leader.host}:{leader.port}"]  # not leading yet
    leader.start()
    follower = GeoServer(tmp_path / "follower", args=["--follow", f"{leader.host}:{leader.port}"])
    follower.start()
    try:
        # refused three times ("cannot follow a follower"): the next try is 4 s away
        wait_until(lambda: stats(follower)["replication_failures"] >= 3, timeout=15,
                   message="three refused tries")  # fmt: skip
        assert stats(follower)["replication_retry_delay"] >= 4
        leader.json("FOLLOW", "no", "one")
        leader.client().execute_command("SET", "fleet", "t1", "POINT", "33", "-115")
        assert follower.json("FOLLOW", leader.host, str(leader.port))["ok"]
        wait_until(lambda: stats(follower)["caught_up"], timeout=2.5, message="caught up at once")
        assert follower.json("GET", "fleet", "t1")["ok"]
    finally:
        follower.stop()
        leader.stop()
