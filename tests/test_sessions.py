"""Sessions that end when they are ended (issue 16, item 4) and refresh-token families that
serialise rotation against revocation (issue 15, item 3): access tokens name their
session, logout and family revocation refuse them at once, a concurrent refresh of one
token gets the same new pair, and reuse detection cannot miss a rotation in flight."""
from __future__ import annotations

import hashlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import psycopg

from .conftest import STRONG_PASSWORD, acting_as, api_signup, bearer, client_with_own_ip, unique_email, wait_for


def me(client, tokens: dict) -> int:
    return client.get("/v1/auth/me", headers=bearer(tokens["access_token"])).status_code


def refresh(client, refresh_token: str):
    return client.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


# -- the access token ends with its session -------------------------------------------------

def test_logout_refuses_the_access_token_at_once(api):
    tokens = api_signup(api)
    assert me(api, tokens) == 200
    assert api.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]},
                    headers=bearer(tokens["access_token"])).status_code == 204
    assert me(api, tokens) == 401


def test_logout_ends_only_its_own_session(api):
    email = unique_email()
    phone = api_signup(api, email=email)
    laptop = api.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}).get_json()
    api.post("/v1/auth/logout", json={"refresh_token": phone["refresh_token"]}, headers=bearer(phone["access_token"]))
    assert me(api, phone) == 401
    assert me(api, laptop) == 200
    assert refresh(api, laptop["refresh_token"]).status_code == 200


def test_logout_with_another_sessions_refresh_token_ends_the_callers_session_too(api):
    """The access token presented to logout is the session being ended, whatever refresh
    token comes with it."""
    email = unique_email()
    first = api_signup(api, email=email)
    second = api.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}).get_json()
    api.post("/v1/auth/logout", json={"refresh_token": second["refresh_token"]}, headers=bearer(first["access_token"]))
    assert me(api, first) == 401 and me(api, second) == 401


def test_an_access_token_without_a_session_is_refused(app, api):
    """Every access token names its session now; one that does not is not ours (or predates it)."""
    import jwt

    tokens = api_signup(api)
    claims = jwt.decode(tokens["access_token"], app.config["SECRET_KEY"], algorithms=["HS256"])
    assert uuid.UUID(claims["sid"])
    del claims["sid"]
    stripped = jwt.encode(claims, app.config["SECRET_KEY"], algorithm="HS256")
    assert api.get("/v1/auth/me", headers=bearer(stripped)).status_code == 401
    claims["sid"] = str(uuid.uuid4())
    unknown = jwt.encode(claims, app.config["SECRET_KEY"], algorithm="HS256")
    assert api.get("/v1/auth/me", headers=bearer(unknown)).status_code == 401


def test_another_users_session_id_does_not_open_an_access_token(app, api):
    import jwt

    victim, attacker = api_signup(api), api_signup(api)
    victim_sid = jwt.decode(victim["access_token"], app.config["SECRET_KEY"], algorithms=["HS256"])["sid"]
    claims = jwt.decode(attacker["access_token"], app.config["SECRET_KEY"], algorithms=["HS256"])
    api.post("/v1/auth/logout", json={"refresh_token": attacker["refresh_token"]},
             headers=bearer(attacker["access_token"]))
    claims["sid"] = victim_sid
    assert api.get("/v1/auth/me", headers=bearer(jwt.encode(claims, app.config["SECRET_KEY"]))).status_code == 401


def test_password_change_and_disable_refuse_access_tokens(api, connect):
    email = unique_email()
    tokens = api_signup(api, email=email)
    changed = api.post("/v1/auth/password", headers=bearer(tokens["access_token"]),
                       json={"current_password": STRONG_PASSWORD, "new_password": "a-brand-new-phrase-77"})
    assert changed.status_code == 200 and me(api, tokens) == 401
    fresh = changed.get_json()
    assert me(api, fresh) == 200
    connect("postgres").execute("select app.set_user_active(%s, false)", (email,))
    assert me(api, fresh) == 401


# -- concurrent refreshes of one token ------------------------------------------------------

def _age_rotations(client_or_none, seconds: int = 11) -> None:
    """Moves every rotation of the last minute back past the grace window (rather than wait)."""
    app = client_or_none.application
    with psycopg.connect(app.config["DATABASE_URL"], autocommit=True) as admin:
        admin.execute("update refresh_tokens set revoked_at = revoked_at - make_interval(secs => %s) "
                      "where revoked_at > now() - interval '1 minute'", (seconds,))


def test_a_second_refresh_within_the_grace_window_gets_the_same_pair(api):
    """A client retry (or a second tab) presenting the token just rotated is not a thief."""
    first = api_signup(api)
    rotated = refresh(api, first["refresh_token"])
    again = refresh(api, first["refresh_token"])
    assert rotated.status_code == again.status_code == 200, again.get_json()
    a, b = rotated.get_json(), again.get_json()
    assert (a["access_token"], a["refresh_token"]) == (b["access_token"], b["refresh_token"])
    assert me(api, a) == 200
    assert refresh(api, a["refresh_token"]).status_code == 200


def test_two_simultaneous_refreshes_both_succeed_with_the_same_pair(app, connect, new_connection):
    """Both requests are in flight together: the family row is held by a third connection
    until both have reached the database, then let go."""
    first = api_signup(client_with_own_ip(app))
    holder = new_connection("postgres")
    token_hash = hashlib.sha256(first["refresh_token"].encode()).digest()
    holder.execute("begin")
    holder.execute("select 1 from refresh_families f join refresh_tokens t on t.family_id = f.id "
                   "where t.token_hash = %s for update of f", (token_hash,))

    def one_refresh():
        return refresh(client_with_own_ip(app), first["refresh_token"])

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(one_refresh) for _ in range(2)]
        blocked = wait_for(lambda: connect("postgres").execute(
            "select count(*) as n from pg_stat_activity where wait_event_type = 'Lock' "
            "and query like %s and cardinality(pg_blocking_pids(pid)) > 0",
            ("%rotate_refresh_token%",)).fetchone()["n"] == 2, timeout=10)
        holder.execute("commit")
        responses = [f.result(timeout=30) for f in futures]
    assert blocked, "both refreshes should have waited on the family"
    assert [r.status_code for r in responses] == [200, 200], [r.get_json() for r in responses]
    pairs = {(r.get_json()["access_token"], r.get_json()["refresh_token"]) for r in responses}
    assert len(pairs) == 1
    [(access, refresh_token)] = pairs
    assert me(client_with_own_ip(app), {"access_token": access}) == 200


def test_a_reuse_after_the_grace_window_revokes_the_family(api):
    first = api_signup(api)
    second = refresh(api, first["refresh_token"]).get_json()
    _age_rotations(api)
    assert refresh(api, first["refresh_token"]).status_code == 401
    assert refresh(api, second["refresh_token"]).status_code == 401
    assert me(api, second) == 401


def test_the_grace_window_does_not_revive_a_token_rotated_twice(api):
    """Within the window, only the newest token's predecessor gets the pair again; an older
    one is reuse."""
    first = api_signup(api)
    second = refresh(api, first["refresh_token"]).get_json()
    third = refresh(api, second["refresh_token"]).get_json()
    assert refresh(api, first["refresh_token"]).status_code == 401
    assert refresh(api, third["refresh_token"]).status_code == 401
    assert me(api, third) == 401


# -- rotation against revocation, two connections (issue 15, item 3) -----------------------

def _hash(label: str) -> bytes:
    return hashlib.sha256(f"{label}-{uuid.uuid4()}".encode()).digest()


def test_reuse_detection_sees_a_rotation_still_in_flight(make_user, new_connection, connect):
    """A rotates T1 -> T2 and has not committed; meanwhile B presents the long-used T0, which
    revokes the family. Once both commit, T2 must be dead too: the thief's rotation in
    flight must not outlive the revocation."""
    user = make_user()
    expires = datetime.now(timezone.utc) + timedelta(days=30)
    t0, t1, t2, t3 = (_hash(n) for n in ("t0", "t1", "t2", "t3"))
    setup = connect("sg_app")
    with acting_as(setup, user):
        setup.execute("select app.issue_refresh_token(%s, %s, %s)", (uuid.uuid4(), t0, expires))
    assert setup.execute("select outcome from app.rotate_refresh_token(%s, %s, %s)",
                         (t0, t1, expires)).fetchone()["outcome"] == "rotated"
    # T0 was used long ago: presenting it again is reuse, not a concurrent retry
    connect("postgres").execute("update refresh_tokens set revoked_at = now() - interval '1 hour' "
                                "where token_hash = %s", (t0,))

    a, b = new_connection("sg_app"), new_connection("sg_app")
    a.execute("begin")
    assert a.execute("select outcome from app.rotate_refresh_token(%s, %s, %s)",
                     (t1, t2, expires)).fetchone()["outcome"] == "rotated"
    b_pid = b.execute("select pg_backend_pid() as pid").fetchone()["pid"]
    outcome: dict = {}

    def reuse():
        with b.transaction():
            outcome["b"] = b.execute("select outcome from app.rotate_refresh_token(%s, %s, %s)",
                                     (t0, _hash("never"), expires)).fetchone()["outcome"]

    thread = threading.Thread(target=reuse)
    thread.start()
    assert wait_for(lambda: connect("postgres").execute(
        "select wait_event_type from pg_stat_activity where pid = %s", (b_pid,)).fetchone()["wait_event_type"]
        == "Lock", timeout=10)
    a.execute("commit")
    thread.join(timeout=30)
    assert outcome["b"] == "reused"
    # the thief's T2 is dead: it cannot rotate, and the family is marked revoked
    assert setup.execute("select outcome from app.rotate_refresh_token(%s, %s, %s)",
                         (t2, t3, expires)).fetchone()["outcome"] != "rotated"
    assert connect("postgres").execute("select count(*) as n from refresh_tokens where token_hash = %s",
                                       (t3,)).fetchone()["n"] == 0


def test_a_rotation_waits_for_a_revocation_in_flight_and_then_refuses(make_user, new_connection, connect):
    """The other order: logout (revocation) holds the family, then a rotation arrives."""
    user = make_user()
    expires = datetime.now(timezone.utc) + timedelta(days=30)
    t0, t1 = _hash("t0"), _hash("t1")
    setup = connect("sg_app")
    with acting_as(setup, user):
        setup.execute("select app.issue_refresh_token(%s, %s, %s)", (uuid.uuid4(), t0, expires))
    logout, rotation = new_connection("sg_app"), new_connection("sg_app")
    logout.execute("begin")
    logout.execute("select set_config('app.user_id', %s, true)", (str(user),))
    assert logout.execute("select app.revoke_refresh_token(%s) as ok", (t0,)).fetchone()["ok"] is True
    rotation_pid = rotation.execute("select pg_backend_pid() as pid").fetchone()["pid"]
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(rotation.execute(
        "select outcome from app.rotate_refresh_token(%s, %s, %s)", (t0, t1, expires)).fetchone()))
    thread.start()
    assert wait_for(lambda: connect("postgres").execute(
        "select wait_event_type from pg_stat_activity where pid = %s", (rotation_pid,)).fetchone()["wait_event_type"]
        == "Lock", timeout=10)
    logout.execute("commit")
    thread.join(timeout=30)
    assert outcome["outcome"] != "rotated"
