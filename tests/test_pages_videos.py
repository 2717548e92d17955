"""The video list (issue 17 item 7): pages of videos, rename and delete (a deleted video
frees its files, never its credit) through the API and the dashboard's forms, poster
thumbnails, and download names from the title or topic (RFC 6266)."""
from __future__ import annotations

import io
import json
import re
import unicodedata
from urllib.parse import quote

import pytest
from PIL import Image

from .conftest import api_signup, balance, bearer, ledger_sum, unique_email
from .test_auth_ui import csrf_token, sign_up


def make_job(api, token: str, topic: str = "The history of coffee") -> str:
    response = api.post("/v1/shorts/generate", json={"platform": "tiktok", "topic": topic}, headers=bearer(token))
    assert response.status_code == 202, response.get_json()
    return response.get_json()["job_id"]


def finish(admin, media_root, job_id: str) -> None:
    """Complete the job as the worker does (claim, then complete under that claim), with a
    video file and a real JPEG poster beside it."""
    attempt = admin.execute("select attempts from app.claim_job(%s)", (job_id,)).fetchone()["attempts"]
    assert admin.execute("select app.complete_job(%s, %s, %s) as done",
                         (job_id, attempt, f"/media/{job_id}.mp4")).fetchone()["done"]
    (media_root / f"{job_id}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    poster = io.BytesIO()
    Image.new("RGB", (72, 128), "#6d3df5").save(poster, "JPEG")
    (media_root / f"{job_id}.jpg").write_bytes(poster.getvalue())


@pytest.fixture
def admin(connect):
    return connect("postgres")


@pytest.fixture
def owner(api, admin):
    """A confirmed user with 50 credits: (token, user id)."""
    user = api_signup(api)
    admin.execute("update users set is_verified = true where id = %s", (user["user"]["id"],))
    admin.execute("select * from app.grant_credits(%s, 45, 'admin_grant', %s)",
                  (user["user"]["id"], f"test:{user['user']['id']}"))
    return user["access_token"], user["user"]["id"]


# -- rename ------------------------------------------------------------------------------

def test_rename_through_the_api(api, owner):
    token, _ = owner
    job_id = make_job(api, token)
    response = api.patch(f"/v1/jobs/{job_id}", json={"title": "  Coffee, the short version  "}, headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json()["title"] == "Coffee, the short version"
    assert response.get_json()["topic"] == "The history of coffee"
    listed = api.get("/v1/jobs", headers=bearer(token)).get_json()["jobs"]
    assert listed[0]["title"] == "Coffee, the short version"


@pytest.mark.parametrize("body", [{}, {"title": ""}, {"title": "   "}, {"title": "x" * 201}, {"title": 5},
                                  {"title": "two\nlines"}, {"title": "tab\there"}, {"title": "nul\x00"},
                                  {"title": "clip\u202egpj"}, {"title": "line\u2028break"},
                                  {"title": "\ud800"}])
def test_a_bad_title_is_a_422_and_changes_nothing(api, owner, body):
    token, _ = owner
    job_id = make_job(api, token)
    response = api.patch(f"/v1/jobs/{job_id}", json=body, headers=bearer(token))
    assert response.status_code == 422, response.get_json()
    assert "title" in response.get_json()["detail"]
    assert api.get(f"/v1/jobs/{job_id}", headers=bearer(token)).get_json()["title"] is None


def test_nobody_renames_or_deletes_another_users_video(api, owner, admin, media_root):
    token, _ = owner
    job_id = make_job(api, token)
    finish(admin, media_root, job_id)
    stranger = api_signup(api)["access_token"]
    assert api.patch(f"/v1/jobs/{job_id}", json={"title": "mine now"}, headers=bearer(stranger)).status_code == 404
    assert api.delete(f"/v1/jobs/{job_id}", headers=bearer(stranger)).status_code == 404
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 401
    job = api.get(f"/v1/jobs/{job_id}", headers=bearer(token)).get_json()
    assert job["title"] is None and job["video_url"]
    assert (media_root / f"{job_id}.mp4").exists()


@pytest.mark.parametrize("job_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_unknown_videos_are_404(api, owner, job_id):
    token, _ = owner
    assert api.patch(f"/v1/jobs/{job_id}", json={"title": "x"}, headers=bearer(token)).status_code == 404
    assert api.delete(f"/v1/jobs/{job_id}", headers=bearer(token)).status_code == 404


# -- delete ------------------------------------------------------------------------------

def test_delete_frees_the_files_not_the_credit(api, owner, admin, media_root):
    token, user_id = owner
    job_id = make_job(api, token)
    finish(admin, media_root, job_id)
    credits, ledger = balance(admin, user_id), ledger_sum(admin, user_id)
    assert credits == ledger
    response = api.delete(f"/v1/jobs/{job_id}", headers=bearer(token))
    assert response.status_code == 204
    assert not (media_root / f"{job_id}.mp4").exists() and not (media_root / f"{job_id}.jpg").exists()
    assert balance(admin, user_id) == credits and ledger_sum(admin, user_id) == ledger
    assert api.get(f"/v1/jobs/{job_id}", headers=bearer(token)).status_code == 404
    assert job_id not in {j["job_id"] for j in api.get("/v1/jobs", headers=bearer(token)).get_json()["jobs"]}
    assert api.get(f"/media/{job_id}.mp4", headers=bearer(token)).status_code == 404
    assert api.delete(f"/v1/jobs/{job_id}", headers=bearer(token)).status_code == 404  # once
    # the row that paid for it is still there, for the books
    row = admin.execute("select deleted_at is not null as deleted, output_url from jobs where id = %s",
                        (job_id,)).fetchone()
    assert row == {"deleted": True, "output_url": None}
    assert admin.execute("select count(*) as n from credit_ledger where job_id = %s", (job_id,)).fetchone()["n"] == 1


def test_a_video_still_rendering_cannot_be_deleted(api, owner, admin):
    token, _ = owner
    job_id = make_job(api, token)
    response = api.delete(f"/v1/jobs/{job_id}", headers=bearer(token))
    assert response.status_code == 409 and "still rendering" in response.get_json()["detail"]
    admin.execute("select * from app.claim_job(%s)", (job_id,))
    assert api.delete(f"/v1/jobs/{job_id}", headers=bearer(token)).status_code == 409
    assert api.get(f"/v1/jobs/{job_id}", headers=bearer(token)).status_code == 200


def test_a_failed_video_can_be_deleted_and_its_refund_stays(api, owner, admin):
    token, user_id = owner
    job_id = make_job(api, token)
    admin.execute("select app.fail_and_refund(%s, null)", (job_id,))
    credits = balance(admin, user_id)
    assert api.delete(f"/v1/jobs/{job_id}", headers=bearer(token)).status_code == 204
    assert balance(admin, user_id) == credits == ledger_sum(admin, user_id)


def test_the_web_role_cannot_write_titles_or_deletions_directly(connect, owner):
    """Only the two functions change these columns: sg_app has no UPDATE on jobs."""
    import psycopg

    app_conn = connect("sg_app")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with app_conn.transaction():
            app_conn.execute("update jobs set deleted_at = now()")


# -- posters and download names ------------------------------------------------------------

def test_posters_are_served_to_their_owner_only(api, owner, admin, media_root):
    token, _ = owner
    job_id = make_job(api, token)
    assert api.get(f"/media/{job_id}.jpg", headers=bearer(token)).status_code == 404  # not rendered yet
    finish(admin, media_root, job_id)
    job = api.get(f"/v1/jobs/{job_id}", headers=bearer(token)).get_json()
    assert job["poster_url"] == f"/media/{job_id}.jpg"
    poster = api.get(job["poster_url"], headers=bearer(token))
    assert poster.status_code == 200 and poster.mimetype == "image/jpeg" and poster.data[:3] == b"\xff\xd8\xff"
    assert api.get(job["poster_url"]).status_code == 401
    assert api.get(job["poster_url"], headers=bearer(api_signup(api)["access_token"])).status_code == 404


@pytest.mark.parametrize("topic,title,ascii_name,utf8_name", [
    ("The history of coffee", None, "the-history-of-coffee.mp4", "The history of coffee.mp4"),
    ("Café culture in Tōkyō", None, "cafe-culture-in-tokyo.mp4", "Café culture in Tōkyō.mp4"),
    ("東京の歴史", None, "video.mp4", "東京の歴史.mp4"),
    ("whatever", 'My "best" cut: v2/final', "my-best-cut-v2-final.mp4", "My best cut v2 final.mp4"),
])
def test_download_names_come_from_the_title_or_topic(api, owner, admin, media_root, topic, title, ascii_name,
                                                     utf8_name):
    token, _ = owner
    job_id = make_job(api, token, topic)
    finish(admin, media_root, job_id)
    if title:
        assert api.patch(f"/v1/jobs/{job_id}", json={"title": title}, headers=bearer(token)).status_code == 200
    download = api.get(f"/media/{job_id}.mp4?download=1", headers=bearer(token))
    assert download.status_code == 200
    assert download.headers["Content-Disposition"] == \
        f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(utf8_name, safe='')}"
    inline = api.get(f"/media/{job_id}.mp4", headers=bearer(token))
    assert inline.headers["Content-Disposition"].startswith(f'inline; filename="{ascii_name}"')
    assert "story-genius" not in download.headers["Content-Disposition"]


# -- the dashboard -------------------------------------------------------------------------

def signed_in_browser(app, admin, credits: int = 40):
    browser = app.test_client()
    email = unique_email("videos")
    sign_up(browser, email)
    user_id = admin.execute("select id from users where email = %s", (email,)).fetchone()["id"]
    admin.execute("update users set is_verified = true where id = %s", (user_id,))
    admin.execute("select * from app.grant_credits(%s, %s, 'admin_grant', %s)", (user_id, credits, f"t:{user_id}"))
    return browser, user_id


def create_jobs(admin, user_id, count: int) -> list[str]:
    """`count` jobs, oldest first, spent as the user."""
    made = []
    for n in range(count):
        with admin.transaction():
            admin.execute("select set_config('app.user_id', %s, true)", (str(user_id),))
            made.append(str(admin.execute("select job_id from app.spend_credit_and_create_job('tiktok', %s)",
                                          (f"topic number {n:02d}",)).fetchone()["job_id"]))
    return made


def listed(html: str) -> list[str]:
    return re.findall(r'<li class="job" data-job-id="([0-9a-f-]+)"', html)


def test_the_dashboard_pages_through_every_video_once(app, admin):
    browser, user_id = signed_in_browser(app, admin)
    made = create_jobs(admin, user_id, 30)
    seen, path, pages = [], "/dashboard", 0
    while path:
        html = browser.get(path).get_data(as_text=True)
        page = listed(html)
        assert 1 <= len(page) <= 12
        seen += page
        pages += 1
        older = re.search(r'<a href="(/dashboard\?before=[0-9a-f-]+)" id="older-page">', html)
        path = older.group(1) if older else None
        if pages > 1:
            assert 'id="newest-page"' in html
    assert pages == 3 and seen == list(reversed(made))
    # the poller of page 2 polls page 2
    second = browser.get(f"/dashboard?before={seen[11]}").get_data(as_text=True)
    poll_url = re.search(r'data-poll-url="([^"]+)"', second).group(1).replace("&amp;", "&")
    assert [j["job_id"] for j in browser.get(poll_url).get_json()["jobs"]] == seen[12:24]


def test_a_full_last_page_has_no_empty_page_after_it(app, admin):
    browser, user_id = signed_in_browser(app, admin)
    create_jobs(admin, user_id, 12)
    html = browser.get("/dashboard").get_data(as_text=True)
    assert len(listed(html)) == 12 and 'id="older-page"' not in html


def test_a_foreign_or_garbage_cursor_shows_the_newest_page(app, admin):
    browser, user_id = signed_in_browser(app, admin)
    mine = create_jobs(admin, user_id, 2)
    other, other_id = signed_in_browser(app, admin)
    theirs = create_jobs(admin, other_id, 1)
    for cursor in (theirs[0], "garbage", "00000000-0000-0000-0000-000000000000"):
        response = browser.get(f"/dashboard?before={cursor}")
        assert response.status_code == 200 and listed(response.get_data(as_text=True)) == mine[::-1]


def test_rename_and_delete_from_the_dashboard(app, admin, media_root):
    browser, user_id = signed_in_browser(app, admin)
    [first, second] = create_jobs(admin, user_id, 2)
    html = browser.get("/dashboard").get_data(as_text=True)
    # unfinished videos offer no actions yet
    assert re.search(rf'data-job-id="{first}".*?<div class="job-actions" hidden>', html, re.S)
    for job_id in (first, second):
        finish(admin, media_root, job_id)
    html = browser.get("/dashboard").get_data(as_text=True)
    assert f'poster="/media/{first}.jpg"' in html
    assert f'href="/media/{first}.mp4?download=1"' in html
    token = csrf_token(html)

    response = browser.post(f"/dashboard/videos/{first}/rename", data={"csrf_token": token, "title": "Coffee!"})
    assert response.status_code == 303
    html = browser.get("/dashboard").get_data(as_text=True)
    assert "Renamed to “Coffee!”." in html and f'id="title-{first}">Coffee!</h3>' in html

    response = browser.post(f"/dashboard/videos/{first}/rename", data={"csrf_token": token, "title": "bad\x01"})
    assert response.status_code == 303
    assert "one line of printable text" in browser.get("/dashboard").get_data(as_text=True).lower()

    credits = balance(admin, user_id)
    response = browser.post(f"/dashboard/videos/{second}/delete", data={"csrf_token": token})
    assert response.status_code == 303
    html = browser.get("/dashboard").get_data(as_text=True)
    assert "Video deleted. The credit it cost stays spent." in html
    assert listed(html) == [first]
    assert not (media_root / f"{second}.mp4").exists()
    assert balance(admin, user_id) == credits


def test_dashboard_forms_need_their_csrf_token(app, admin, media_root):
    browser, user_id = signed_in_browser(app, admin)
    [job_id] = create_jobs(admin, user_id, 1)
    finish(admin, media_root, job_id)
    assert browser.post(f"/dashboard/videos/{job_id}/delete", data={}).status_code in (302, 303, 400)
    assert browser.post(f"/dashboard/videos/{job_id}/rename", data={"title": "x"}).status_code in (302, 303, 400)
    assert listed(browser.get("/dashboard").get_data(as_text=True)) == [job_id]
    assert (media_root / f"{job_id}.mp4").exists()
    assert admin.execute("select title from jobs where id = %s", (job_id,)).fetchone()["title"] is None


def test_a_delete_redirects_back_to_its_page(app, admin, media_root):
    browser, user_id = signed_in_browser(app, admin)
    made = create_jobs(admin, user_id, 14)
    for job_id in made:
        finish(admin, media_root, job_id)
    newest_first = made[::-1]
    cursor = newest_first[11]
    html = browser.get(f"/dashboard?before={cursor}").get_data(as_text=True)
    assert listed(html) == newest_first[12:]
    response = browser.post(f"/dashboard/videos/{newest_first[12]}/delete",
                            data={"csrf_token": csrf_token(html), "page": cursor})
    assert response.headers["Location"] == f"/dashboard?before={cursor}"
    assert listed(browser.get(response.headers["Location"]).get_data(as_text=True)) == newest_first[13:]


def test_the_credits_endpoint_every_tab_polls(app, admin):
    browser, user_id = signed_in_browser(app, admin, credits=3)
    response = browser.get("/dashboard/credits.json")
    assert response.get_json() == {"credits_remaining": balance(admin, user_id)}
    assert response.headers["Cache-Control"] == "no-store"
    assert app.test_client().get("/dashboard/credits.json").status_code == 302  # signed out: to the login


# -- hostile text ------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

hostile_titles = st.text(st.one_of(st.characters(categories=["Cc", "Cs", "Zl", "Zp", "Cf"]), st.characters(),
                                   st.sampled_from(["\x00", "\ud800", "\x1b", "\r", "\n", "\u2028"])), max_size=210)


@pytest.fixture
def a_job(api, owner):
    """One job of the owner, renamed by every example of a hypothesis test: {id, title}."""
    return {"id": make_job(api, owner[0]), "title": None}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=hostile_titles)
def test_any_title_is_stored_as_one_clean_line_or_refused(api, owner, a_job, title):
    token, _ = owner
    body = json.dumps({"title": title}, ensure_ascii=True)  # a lone surrogate as the escape "\ud800"
    response = api.patch(f"/v1/jobs/{a_job['id']}", data=body, content_type="application/json",
                         headers=bearer(token))
    assert response.status_code in (200, 422), (response.status_code, title)
    stored = api.get(f"/v1/jobs/{a_job['id']}", headers=bearer(token)).get_json()["title"]
    if response.status_code == 200:
        assert stored == title.strip() and 1 <= len(stored) <= 200
        assert not any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or 0x202a <= ord(ch) <= 0x202e
                       or 0x2066 <= ord(ch) <= 0x2069 for ch in stored), stored
        a_job["title"] = stored
    else:
        assert stored == a_job["title"] and "title" in response.get_json()["detail"]
