"""`tito serve` at the HTTP level, in process (Starlette's TestClient): every rule of the service.

Who: no or a wrong token is 401, a student sees only their own attempts (another's is 404, like
one that does not exist), roles are kept apart, tokens are stored as hashes only. Forms: CSRF
token and Origin checked, cookies SameSite=Strict and HttpOnly. Uploads: 413 above the cap
(whatever Content-Length says), 400 with the reason when not a notebook, 429 with Retry-After
and the time to come back; an accepted upload is on disk before "received". Files: nothing
outside the service's own pages is served. Grading: through grade_one in the sandbox, the score
and detail `tito grade` gives (tests/submissions/expected_grades.json), the feedback page shown.
"""
import csv
import hashlib
import io
import json
import re
import sqlite3
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from serve_helpers import (EXPECTED, OPEN, bearer, csrf_of, make_service, sample, sign_in, upload_form,
                           wait_finished)

RELEASED = "untouched_release"


@pytest.fixture
def service(tmp_path):
    "A service whose grading threads are not started: attempts stay queued (rules only)."
    service = make_service(tmp_path / "course")
    service.tokens = {name: service.store.issue_token(name) for name in ("alice", "bob")}
    service.tokens["prof"] = service.store.issue_token("prof", role="instructor")
    return service


@pytest.fixture
def client(service):
    with TestClient(service.app) as client:
        yield client


# ---------------------------------------------------------------- who

def test_no_or_wrong_token_is_401(service, client):
    alice = service.tokens["alice"]
    wrong_secret = alice[:-4] + ("AAAA" if not alice.endswith("AAAA") else "BBBB")
    for headers in ({}, bearer(""), bearer("nonsense"), bearer(wrong_secret), {"Authorization": f"Basic {alice}"}):
        response = client.post("/api/submissions", content=sample(RELEASED), headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "token" in response.json()["error"]
        assert client.get("/api/submissions/1", headers=headers).status_code == 401
    for path in ("/student", "/attempts/1", "/attempts/1/feedback", "/instructor", "/instructor/grades.csv"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert "Sign in" in response.text
    response = sign_in(client, wrong_secret)
    assert response.status_code == 401 and "not valid" in response.text
    assert client.get("/student").status_code == 401
    assert service.store.counts() == {}


def test_tokens_are_stored_as_hashes_and_reissue_revokes(service, client, tmp_path):
    alice = service.tokens["alice"]
    raw = (service.store.path).read_bytes() + b"".join(
        p.read_bytes() for p in service.store.state.glob("serve.db*") if p.is_file())
    secret = alice.split("_", 2)[2]
    assert secret.encode() not in raw and alice.encode() not in raw
    with sqlite3.connect(service.store.path) as db:
        digests = [row[0] for row in db.execute("SELECT digest FROM tokens WHERE student = 'alice'")]
    assert digests == [hashlib.sha256(secret.encode()).hexdigest()]
    assert sign_in(client, alice).url.path == "/student"
    assert client.get("/student").status_code == 200
    new = service.store.issue_token("alice")          # e.g. `tito tokens --reissue`
    assert client.get("/student").status_code == 401  # the session of the old token is gone
    assert client.post("/api/submissions", content=sample(RELEASED), headers=bearer(alice)).status_code == 401
    assert sign_in(client, new).url.path == "/student"


def test_a_student_sees_only_their_own_attempts(service, client):
    alice, bob, prof = (service.tokens[n] for n in ("alice", "bob", "prof"))
    mine = client.post("/api/submissions", content=sample(RELEASED), headers=bearer(alice))
    assert mine.status_code == 202
    attempt = mine.json()["id"]
    assert client.get(f"/api/submissions/{attempt}", headers=bearer(alice)).json()["student"] == "alice"
    missing = client.get("/api/submissions/99999", headers=bearer(bob))
    for path in (f"/api/submissions/{attempt}", f"/api/submissions/{attempt}/feedback"):
        response = client.get(path, headers=bearer(bob))
        assert response.status_code == 404 and response.json() == missing.json(), path
    assert client.get("/api/submissions", headers=bearer(bob)).json() == []
    sign_in(client, bob)
    nobody = client.get("/attempts/99999")
    for path in (f"/attempts/{attempt}", f"/attempts/{attempt}/feedback"):
        response = client.get(path)
        assert response.status_code == 404 and response.text == nobody.text, path
    assert "alice" not in client.get("/student").text
    # Roles: a student is not the instructor, and the instructor's token hands nothing in.
    assert client.get("/instructor").status_code == 403
    assert client.get("/instructor/grades.csv").status_code == 403
    assert client.post("/api/submissions", content=sample(RELEASED), headers=bearer(prof)).status_code == 403
    sign_in(client, prof)
    assert client.get("/student").status_code == 403
    assert client.get("/instructor").status_code == 200


# ---------------------------------------------------------------- forms

def test_forms_need_the_sessions_csrf_token_and_our_origin(service, client):
    response = client.get("/")
    cookie = response.headers["set-cookie"].lower()
    assert "samesite=strict" in cookie and "httponly" in cookie
    token = service.tokens["alice"]
    assert client.post("/signin", data={"token": token}).status_code == 403
    assert client.post("/signin", data={"token": token, "csrf": "x" * 43}).status_code == 403
    assert client.post("/signin", data={"token": token, "csrf": csrf_of(response.text)},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    assert sign_in(client, token).url.path == "/student"
    page_csrf = csrf_of(client.get("/student").text)
    assert upload_form(client, sample(RELEASED), csrf="").status_code == 403
    tampered = page_csrf[:-1] + ("B" if page_csrf.endswith("A") else "A")   # always differs from the real one
    assert upload_form(client, sample(RELEASED), csrf=tampered).status_code == 403
    other = TestClient(service.app)       # another browser: its own session, its own CSRF token
    sign_in(other, service.tokens["bob"])
    assert upload_form(client, sample(RELEASED), csrf=csrf_of(other.get("/student").text)).status_code == 403
    assert service.store.counts() == {}
    response = upload_form(client, sample(RELEASED), csrf=page_csrf)
    assert response.status_code == 200 and re.fullmatch(r"/attempts/\d+", response.url.path)
    assert client.post("/signout", data={}).status_code == 403
    assert client.post("/signout", data={"csrf": page_csrf}).status_code == 200
    assert client.get("/student").status_code == 401


# ---------------------------------------------------------------- uploads

def test_upload_size_cap_is_413_whatever_the_headers_say(tmp_path):
    service = make_service(tmp_path / "course", replace(OPEN, max_upload_mb=0.25))
    token = service.store.issue_token("alice")
    big = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
                      "padding": "x" * 400_000}).encode()
    with TestClient(service.app) as client:
        response = client.post("/api/submissions", content=big, headers=bearer(token))
        assert response.status_code == 413 and "at most 0.25 MiB" in response.json()["error"]

        def chunks():   # no Content-Length: counted while reading
            for _ in range(40):
                yield b"x" * 10_000
        response = client.post("/api/submissions", content=chunks(), headers=bearer(token))
        assert response.status_code == 413
        sign_in(client, token)
        response = upload_form(client, big)
        assert response.status_code == 413 and "at most 0.25 MiB" in response.text
    assert service.store.counts() == {}


@pytest.mark.parametrize("data, reason", [
    (b"", "the upload is empty"),
    (b"print('hello')\n", "not a Jupyter notebook: not JSON (line 1, column 1"),
    (b'{"cells": 3}', "not a Jupyter notebook: JSON but not a notebook: expected an object with a 'cells' list"),
    (b'{"cells": [], "nbformat": 3}', "not a Jupyter notebook: expected notebook format 4, got 3"),
    (b"\xff\xfe{}", "not a Jupyter notebook: not UTF-8 text"),
])
def test_not_a_notebook_is_400_with_the_reason(service, client, data, reason):
    response = client.post("/api/submissions", content=data, headers=bearer(service.tokens["alice"]))
    assert response.status_code == 400 and response.json()["error"].startswith(reason), response.text
    sign_in(client, service.tokens["alice"])
    response = upload_form(client, data, name="notes.txt")
    assert response.status_code == 400 and reason.replace("'", "&#39;") in response.text
    assert service.store.counts() == {}


def test_rate_limit_is_429_with_when_to_come_back(tmp_path):
    now = [1_800_000_000.0]
    service = make_service(tmp_path / "course", replace(OPEN, attempts_per_hour=3, min_gap_seconds=30),
                           clock=lambda: now[0])
    token = service.store.issue_token("alice")
    other = service.store.issue_token("bob")

    def submit(who=token):
        return client.post("/api/submissions", content=sample(RELEASED), headers=bearer(who))
    with TestClient(service.app) as client:
        assert submit().status_code == 202
        now[0] += 10
        refused = submit()
        assert refused.status_code == 429 and refused.headers["retry-after"] == "20"
        assert refused.json()["error"] == ("attempts must be 30 s apart; the next is accepted at "
                                           "2027-01-15T08:00:30.000Z")
        assert submit(other).status_code == 202      # the limit is per student
        now[0] += 20
        assert submit().status_code == 202
        now[0] += 40
        assert submit().status_code == 202
        now[0] += 40
        refused = submit()
        assert refused.status_code == 429 and refused.headers["retry-after"] == str(3600 - 110)
        assert "3 attempts an hour is the limit; the next is accepted at 2027-01-15T09:00:00.000Z" \
            == refused.json()["error"]
        sign_in(client, token)
        page = upload_form(client, sample(RELEASED))
        assert page.status_code == 429 and page.headers["retry-after"] == str(3600 - 110)
        assert "2027-01-15T09:00:00.000Z" in page.text
        now[0] += 3600 - 110
        assert submit().status_code == 202
    received = [a["received_at"] for a in service.store.attempts("alice")]
    assert received == ["2027-01-15T09:00:00.000Z", "2027-01-15T08:01:10.000Z", "2027-01-15T08:00:30.000Z",
                        "2027-01-15T08:00:00.000Z"]


def test_accepted_uploads_are_on_disk_and_one_students_attempts_graded_in_order(service, client):
    store = service.store
    data = [sample(RELEASED), sample("reference"), sample(RELEASED)]
    answers = [client.post("/api/submissions", content=d, headers=bearer(service.tokens["alice"])) for d in data]
    answers.append(client.post("/api/submissions", content=data[0], headers=bearer(service.tokens["bob"])))
    assert [a.status_code for a in answers] == [202] * 4
    ids = [a.json()["id"] for a in answers]
    assert [a.json()["number"] for a in answers] == [1, 2, 3, 1]
    for answer, content in zip(answers, data + data[:1]):
        attempt = store.attempt(answer.json()["id"])
        assert attempt["status"] == "queued" and attempt["received_at"].endswith("Z")
        blob = store.blob_path(attempt["sha256"])
        assert blob.read_bytes() == content and attempt["sha256"] == hashlib.sha256(content).hexdigest()
    assert len(list(store.uploads.rglob("*.ipynb"))) == 2     # content-addressed: the same bytes kept once
    # The queue: alice's attempts one at a time, in the order received; bob's alongside.
    first = store.claim()
    assert first["id"] == ids[0]
    assert store.claim()["id"] == ids[3]
    assert store.claim() is None
    store.finish(first["id"], "done", {})
    assert store.claim()["id"] == ids[1]
    # A service killed now: what was being graded is queued again at the next start.
    assert store.recover() == 2
    assert [store.claim()["id"] for _ in range(2)] == [ids[1], ids[3]]


# ---------------------------------------------------------------- files

def test_nothing_but_the_services_pages_is_served(service, client):
    sign_in(client, service.tokens["alice"])
    assert client.get("/static/style.css").status_code == 200
    for path in ("/source/09_spatial/09_spatial.ipynb", "/settings.ini", "/static/../app.py", "/static/%2e%2e/app.py",
                 "/static/..%2f..%2fsettings.ini", "/attempts/..%2f..%2fsettings.ini", "/attempts/1%2f..",
                 "/.tito-serve/serve.db", "/feedback/alice/09_spatial.html", "/attempts/-1", "/static/templates"):
        response = client.get(path)
        assert response.status_code == 404, (path, response.status_code)
        assert "BEGIN" not in response.text and "def " not in response.text


# ---------------------------------------------------------------- grading

def test_grades_and_feedback_are_tito_grades(tmp_path):
    """The reference and a buggy notebook through the form: queued -> done, the score, status and
    detail `tito grade` gives them, the feedback page with the concept; the instructor's page and
    grades.csv show each student's latest graded attempt; attempts.csv has every received-at time."""
    service = make_service(tmp_path / "course", autostart=True)
    alice, bob = service.store.issue_token("alice"), service.store.issue_token("bob")
    prof = service.store.issue_token("prof", role="instructor")
    with TestClient(service.app) as client, TestClient(service.app) as other:
        sign_in(client, alice)
        first = upload_form(client, sample("bug_max_init_zero"))
        assert first.status_code == 200 and "received" in first.text.lower()
        second = client.post("/api/submissions", content=sample("reference"), headers=bearer(alice))
        sign_in(other, bob)
        third = upload_form(other, sample("bug_max_init_zero"))
        ids = [int(first.url.path.split("/")[-1]), second.json()["id"], int(third.url.path.split("/")[-1])]
        attempts = wait_finished(service.store, ids)
        for attempt, name in zip(attempts, ("bug_max_init_zero", "reference", "bug_max_init_zero")):
            score, status, detail = EXPECTED[name]
            result = attempt["result"]
            assert (attempt["status"], result["score"], result["status"], result["detail"]) == \
                ("done", score, status, detail), name
            assert attempt["grading_runs"] == 1
        page = client.get(f"/attempts/{ids[0]}")
        assert f"{EXPECTED['bug_max_init_zero'][0]:g} / 66" in page.text and "max_pool2d_loops" in page.text
        feedback = client.get(f"/attempts/{ids[0]}/feedback")
        assert feedback.status_code == 200 and "Feedback: 09_spatial, alice" in feedback.text
        assert "-np.inf" in feedback.text and "script-src" not in feedback.headers["content-security-policy"]
        assert "BEGIN HIDDEN" not in feedback.text
        api = client.get(f"/api/submissions/{ids[1]}", headers=bearer(alice)).json()
        assert (api["status"], api["score"], api["max_score"]) == ("done", 60, 66)   # 60 autograded + 6 written, graded by hand
        assert [a["number"] for a in client.get("/api/submissions", headers=bearer(alice)).json()] == [2, 1]

        sign_in(client, prof)
        summary = client.get("/instructor")
        assert summary.status_code == 200 and "2 students: mean" in summary.text
        rows = list(csv.DictReader(io.StringIO(client.get("/instructor/grades.csv").text)))
        assert [(r["student_id"], r["score"], r["status"]) for r in rows] == \
            [("alice", "60", "graded"), ("bob", f"{EXPECTED['bug_max_init_zero'][0]:g}", "graded")]
        assert list(rows[0])[:5] == ["student_id", "score", "max_score", "status", "detail"]
        every = list(csv.DictReader(io.StringIO(client.get("/instructor/attempts.csv").text)))
        assert [(r["student_id"], r["number"]) for r in every] == [("alice", "1"), ("alice", "2"), ("bob", "1")]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["received_at"]) for r in every)
        assert client.get(f"/instructor/attempts/{ids[2]}/feedback").status_code == 200
        times = client.get("/instructor/submitted_at.csv").text
        assert times == (f"student_id,submitted_at\nalice,{attempts[1]['received_at']}\n"
                         f"bob,{attempts[2]['received_at']}\n")


def test_grading_on_a_dask_scheduler(tmp_path):
    "`tito serve --scheduler`: a worker process grades the attempt, the service keeps its page and grade."
    from distributed import LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as cluster:
        service = make_service(tmp_path / "course", autostart=True, scheduler=cluster.scheduler_address)
        token = service.store.issue_token("alice")
        with TestClient(service.app) as client:
            answer = client.post("/api/submissions", content=sample("bug_max_init_zero"), headers=bearer(token))
            attempt, = wait_finished(service.store, [answer.json()["id"]])
            score, status, detail = EXPECTED["bug_max_init_zero"]
            assert (attempt["status"], attempt["result"]["score"], attempt["result"]["detail"]) == ("done", score, detail)
            feedback = client.get(f"/api/submissions/{attempt['id']}/feedback", headers=bearer(token))
            assert feedback.status_code == 200 and "Feedback: 09_spatial, alice" in feedback.text


def test_tito_tokens_prints_each_token_once_and_keeps_only_hashes(tmp_path, capsys):
    from tito.cli import main
    from tito.serve.store import Store
    course = tmp_path / "course"
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,name\nalice,Alice\nbob,Bob\nalice,Alice again\n", encoding="utf-8")
    assert main(["tokens", str(roster), "--course", str(course), "--instructor", "prof"]) == 0
    out = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out.out)))
    assert [r["student_id"] for r in rows] == ["alice", "bob", "prof"]
    store = Store(course)
    assert [store.authenticate(r["token"]).role for r in rows] == ["student", "student", "instructor"]
    assert "shown only now" in out.err
    assert main(["tokens", str(roster), "--course", str(course)]) == 0       # nobody new: nothing issued
    again = capsys.readouterr()
    assert again.out == "student_id,token\n" and "2 student(s) already hold a token" in again.err
    saved = tmp_path / "tokens.csv"
    assert main(["tokens", str(roster), "--course", str(course), "--reissue", "--out", str(saved)]) == 0
    assert saved.stat().st_mode & 0o777 == 0o600
    fresh = list(csv.DictReader(saved.open()))
    assert store.authenticate(rows[0]["token"]) is None and store.authenticate(fresh[0]["token"]).student == "alice"
    for text, message in (("name\nalice\n", "expected a student_id column, got columns ['name']"),
                          ("student_id\n../etc\nok\n", "1 student id(s) are not letters, digits")):
        roster.write_text(text, encoding="utf-8")
        assert main(["tokens", str(roster), "--course", str(course)]) == 1
        assert message in capsys.readouterr().err
    assert main(["tokens", str(tmp_path / "none.csv"), "--course", str(course)]) == 1
    assert "none.csv not found: expected a CSV file with a student_id column" in capsys.readouterr().err


def test_serve_refuses_without_a_sandbox_unless_told(tmp_path, monkeypatch):
    from tito.grading import course as grading
    monkeypatch.setattr(grading, "sandbox_available", lambda: (False, "bwrap: no user namespaces"))
    with pytest.raises(grading.GradingError, match="--no-sandbox"):
        make_service(tmp_path / "refused")
    assert make_service(tmp_path / "unsandboxed", sandbox=False).pool.course.sandbox_note == "sandbox off"


def test_why_grading_failed_is_shown_to_the_instructor_only(service, client, monkeypatch):
    "A grading error (e.g. a page that would leak hidden text) fails the attempt; its reason stays hidden."
    from tito.grading.model import GradingError
    from tito.serve import worker

    def refuse(*args, **kwargs):
        raise GradingError("feedback for alice would leak: SECRET HIDDEN LINE")
    monkeypatch.setattr(worker, "grade_one", refuse)
    alice = service.tokens["alice"]
    attempt = client.post("/api/submissions", content=sample(RELEASED), headers=bearer(alice)).json()["id"]
    service.pool.grade(service.store.claim())
    api = client.get(f"/api/submissions/{attempt}", headers=bearer(alice))
    assert api.json()["status"] == "failed" and api.json()["detail"] is None and "SECRET" not in api.text
    assert client.get(f"/api/submissions/{attempt}/feedback", headers=bearer(alice)).status_code == 404
    sign_in(client, alice)
    for path in (f"/attempts/{attempt}", "/student"):
        page = client.get(path)
        assert "SECRET" not in page.text and "failed" in page.text, path
    sign_in(client, service.tokens["prof"])
    assert "latest attempt not graded: the grader refused this attempt: feedback for alice would leak: SECRET" \
        in client.get("/instructor").text
