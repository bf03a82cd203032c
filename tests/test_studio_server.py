"""The studio's server: the token, every endpoint's bad input (a 4xx with a message and no
change), path traversal, two clients labeling at once, the background retrain and its
cancel, and a server killed and restarted with no label lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from ssvae_core.cli import main
from ssvae_core.config import load_config
from ssvae_core.data.loading import load_digits
from ssvae_core.labels.store import STORE_NAME, LabelStore
from ssvae_core.runs.run import split_dataset
from ssvae_core.studio import StudioSession, create_app, shortcut_keys
from ssvae_core.studio.server import MAX_ERROR_CHARS, cookie_name

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOKEN = "test-token-0123456789"
STUDIO_RUN = [
    "--set", "encoder.hidden=[16]", "--set", "decoder.hidden=[16]", "--set", "model.latent_dim=4",
    "--set", "loss.consistency.weight=0", "--set", "train.log_every=10",
    "--set", "prior.num_components=14", "--set", 'head.name="tau"', "--set", "head.free_mass=0.06",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("studio") / "run"
    code = main(
        ["train", "--labels-per-class", "2", "--steps", "30", "--seed", "0", "--out", str(run),
         "--quiet", "--no-plots", *STUDIO_RUN]
    )
    assert code == 0
    return run


@pytest.fixture(scope="module")
def rows() -> dict[str, Any]:
    """Training and held-out rows of the fixture run's split, and which are labeled."""
    dataset = load_digits()
    split = split_dataset(dataset, load_config(None, ["data.labels_per_class=2"]))
    labeled = set(int(i) for i in split.labeled)
    unlabeled = [int(i) for i in split.train if int(i) not in labeled]
    return {"test": [int(i) for i in split.test], "labeled": sorted(labeled), "unlabeled": unlabeled,
            "y": dataset.y}


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def studio(run: Path):
    session = StudioSession(run)
    client = TestClient(create_app(session, TOKEN))
    client.headers["X-SSVAE-Token"] = TOKEN
    try:
        yield session, client
    finally:
        session.close()


def _store(run: Path) -> LabelStore:
    return LabelStore.load(run / STORE_NAME)


# --- the token -------------------------------------------------------------------------


def test_every_url_needs_the_token(studio: tuple[StudioSession, TestClient]) -> None:
    session, _ = studio
    anonymous = TestClient(create_app(session, TOKEN))
    for path in ("/", "/static/studio.js", "/static/plotly.min.js", "/api/state", "/api/map",
                 "/api/examples/0.png", "/api/history", "/nowhere"):
        for params in ({}, {"token": "wrong-token-0123456789"}, {"token": ""}):
            reply = anonymous.get(path, params=params)
            assert reply.status_code == 403, (path, params)
            assert "token" in reply.json()["error"]
    assert anonymous.post("/api/labels", json={"labels": [{"index": 1, "label": "1"}]}).status_code == 403
    assert anonymous.get("/api/state", headers={"X-SSVAE-Token": "nope-nope-nope"}).status_code == 403


def test_the_page_with_the_token_sets_a_cookie_for_the_rest(run: Path) -> None:
    with StudioSession(run) as session:
        browser = TestClient(create_app(session, TOKEN))
        page = browser.get("/", params={"token": TOKEN})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(cookie_name(TOKEN) + "=") and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        assert browser.get("/api/state").status_code == 200  # the cookie alone
        assert browser.get("/static/studio.js").status_code == 200
        plotly = browser.get("/static/plotly.min.js")
        assert plotly.status_code == 200 and len(plotly.content) > 100_000
        assert TestClient(create_app(session, TOKEN)).get(
            "/api/state", headers={"X-SSVAE-Token": TOKEN}
        ).status_code == 200


def test_a_short_token_is_refused(run: Path) -> None:
    with StudioSession(run) as session, pytest.raises(Exception, match="at least 8"):
        create_app(session, "short")


# --- path traversal --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/static/../session.py", "/static/..%2fsession.py", "/static/%2e%2e%2fserver.py",
        "/static/__init__.py", "/static/session.py", "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd", "/api/examples/..%2f..%2fmodel.ckpt",
        "/api/examples/0.png%00.html", "/static/%2Fetc%2Fpasswd", "/static//etc/passwd",
        "/api/channels/..%2fmodel.ckpt.png", "/labels.json", "/model.ckpt", "/api/../labels.json",
    ],
)
def test_nothing_outside_the_page_and_the_api_is_served(
    studio: tuple[StudioSession, TestClient], path: str
) -> None:
    _, client = studio
    reply = client.get(path)
    assert reply.status_code == 404, (path, reply.status_code, reply.text[:200])
    assert "error" in reply.json()
    assert b"root:" not in reply.content and b"ssvae-labels" not in reply.content


# --- bad input: a 4xx with a message, and nothing changes ------------------------------


def _bad_requests(rows: dict[str, Any]) -> list[tuple[str, str, Any, int, str]]:
    test_row, labeled_row, free_row = rows["test"][0], rows["labeled"][0], rows["unlabeled"][0]
    held = str(int(rows["y"][labeled_row]))
    other = str((int(rows["y"][labeled_row]) + 1) % 10)
    return [
        ("GET", "/api/map?projection=umap", None, 400, "projection"),
        ("GET", "/api/examples/999999", None, 404, "not a training example"),
        ("GET", f"/api/examples/{test_row}", None, 404, "held-out"),
        ("GET", f"/api/examples/{test_row}.png", None, 404, "held-out"),
        ("GET", "/api/examples/abc", None, 404, "integer"),
        ("GET", "/api/examples/-1", None, 404, "integer"),
        ("GET", "/api/queue?strategy=nope", None, 400, "strategy"),
        ("GET", "/api/queue?n=0", None, 400, "n must be"),
        ("GET", "/api/queue?n=ten", None, 400, "n must be an integer"),
        ("GET", "/api/queue?n=100000", None, 400, "n must be"),
        ("POST", "/api/labels", "not json", 400, "not valid JSON"),
        ("POST", "/api/labels", b"", 400, "empty"),
        ("POST", "/api/labels", [1, 2], 400, "JSON object"),
        ("POST", "/api/labels", {"labels": []}, 400, "non-empty list"),
        ("POST", "/api/labels", {"labels": [{"index": str(free_row), "label": "1"}]}, 400, "integer"),
        ("POST", "/api/labels", {"labels": [{"index": free_row}]}, 400, "exactly 'index' and 'label'"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": 3}]}, 400, "string"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "cat"}]}, 400, "unknown label 'cat'"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": " "}], "new_class": True}, 400, "empty"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "x" * 101}], "new_class": True}, 400, "characters"),
        # the one rule of label names: invisible, bidirectional, look-alike names are refused
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "\u200b"}], "new_class": True}, 400, "U+200B"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "3\u200b"}], "new_class": True}, 400, "U+200B"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "\u202ecat"}], "new_class": True}, 400, "U+202E"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "\uff13"}], "new_class": True}, 400, "looks like the label '3'"),
        ("POST", "/api/labels", {"labels": [{"index": test_row, "label": "1"}]}, 404, "held-out"),
        ("POST", "/api/labels", {"labels": [{"index": labeled_row, "label": other}]}, 409, "already labeled"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "1"}, {"index": free_row, "label": "2"}]},
         409, "two different labels"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "1"}], "new_class": "yes"}, 400, "true or false"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "1"}], "extra": 1}, 400, "unknown field"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "1"}] * 10_001}, 400, "at most"),
        ("POST", "/api/labels", {"labels": [{"index": free_row, "label": "x" * 3_000_000}]}, 413, "bytes"),
        ("POST", "/api/undo", {"index": free_row, "label": "1"}, 404, "no label"),
        ("POST", "/api/undo", {"index": labeled_row, "label": held}, 409, "'split'"),
        ("POST", "/api/undo", {"index": labeled_row, "label": other}, 409, "not"),
        ("POST", "/api/undo", {"index": labeled_row}, 400, "JSON object"),
        ("GET", "/api/channels/99.png", None, 404, "unknown channel"),
        ("GET", "/api/channels/x.png", None, 404, "integer"),
        ("POST", "/api/retrain", {"steps": 0}, 400, "steps"),
        ("POST", "/api/retrain", {"steps": "10"}, 400, "steps"),
        ("POST", "/api/retrain", {"steps": 10, "lr": 1}, 400, "JSON object"),
        ("POST", "/api/retrain", "{", 400, "not valid JSON"),
        ("POST", "/api/retrain/cancel", None, 409, "no retrain"),
        ("DELETE", "/api/labels", None, 405, "not allowed"),
        ("GET", "/api/labels", None, 405, "not allowed"),
        ("GET", "/api/nothing", None, 404, "no such page"),
    ]


def test_bad_input_gets_a_4xx_with_a_message_and_changes_nothing(
    studio: tuple[StudioSession, TestClient], run: Path, rows: dict[str, Any]
) -> None:
    _, client = studio
    before = {name: (run / name).read_bytes() for name in (STORE_NAME, "model.ckpt", "metrics.jsonl")}
    for method, path, body, status, message in _bad_requests(rows):
        if isinstance(body, (str, bytes)):
            reply = client.request(method, path, content=body, headers={"content-type": "application/json"})
        else:
            reply = client.request(method, path, json=body) if body is not None else client.request(method, path)
        assert reply.status_code == status, (method, path, reply.status_code, reply.text[:300])
        error = reply.json()["error"]
        assert message in error, (path, error)
        assert "\n" not in error
    after = {name: (run / name).read_bytes() for name in before}
    assert after == before


# --- what the page shows -----------------------------------------------------------------


def test_state_map_example_queue_channels_and_history(
    studio: tuple[StudioSession, TestClient], rows: dict[str, Any]
) -> None:
    _, client = studio
    state = client.get("/api/state").json()
    assert state["label_names"] == [str(d) for d in range(10)]
    assert state["shortcuts"] == {str(d): str(d) for d in range(10)}
    assert {"margin", "entropy", "random"} <= set(state["strategies"])
    assert state["num_labeled"] == 20 and state["has_channels"] and state["image_shape"] == [8, 8]
    train_rows = sorted([*rows["labeled"], *rows["unlabeled"]])
    for projection in ("pca",):  # the others: tests/test_explore.py
        points = client.get("/api/map", params={"projection": projection}).json()
        assert sorted(points["index"]) == train_rows
        assert len(points["x"]) == len(points["y"]) == len(train_rows)
        assert all(np.isfinite(points["x"])) and all(0.0 <= v <= 1.0 for v in points["ood"])
        labeled = {i for i, label in zip(points["index"], points["label"], strict=True) if label is not None}
        assert labeled == set(rows["labeled"])
        assert set(points["channel"]) <= set(range(14))
    queue = client.get("/api/queue", params={"strategy": "margin", "n": 7}).json()
    picked = [item["index"] for item in queue["items"]]
    assert len(set(picked)) == 7 and not set(picked) & set(rows["labeled"]) and set(picked) <= set(train_rows)
    first = queue["items"][0]  # why it is queued
    assert len(first["top"]) == 2 and first["top"][0][1] >= first["top"][1][1] and first["channel"] in range(14)
    assert [n["label"] is not None and n["index"] in rows["labeled"] for n in first["neighbours"]] == [True] * 3
    example = client.get(f"/api/examples/{picked[0]}").json()
    assert example["predicted"] == queue["items"][0]["predicted"] and example["label"] is None
    assert abs(sum(example["probabilities"].values()) - 1.0) < 1e-4
    image = client.get(f"/api/examples/{picked[0]}.png")
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
    channels = client.get("/api/channels").json()["channels"]
    assert len(channels) == 14 and any(c["free"] for c in channels)
    assert abs(sum(c["usage"] for c in channels) - 1.0) < 1e-4
    assert all(len(c["tau"]) == 10 and len(c["members"]) == 8 for c in channels)
    assert client.get("/api/channels/0.png").content.startswith(b"\x89PNG")
    history = client.get("/api/history").json()
    assert len(history["entries"]) == 20 and history["rounds"][0]["command"] == "train"


def test_the_default_map_and_queue_are_ready_when_the_page_opens(
    studio: tuple[StudioSession, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # computed once when the studio opens: the page's first requests run neither the
    # model nor the projection, and a label between two queries does not either
    import ssvae_core.labels.active as active
    import ssvae_core.studio.session as studio_session

    session, client = studio
    runs: list[str] = []
    real_inputs, real_project = active.acquisition_inputs, studio_session.project
    monkeypatch.setattr(active, "acquisition_inputs", lambda *a, **k: runs.append("model") or real_inputs(*a, **k))
    monkeypatch.setattr(studio_session, "project", lambda *a, **k: runs.append("map") or real_project(*a, **k))
    assert client.get("/api/map").status_code == 200
    first = client.get("/api/queue", params={"strategy": "margin", "n": 5}).json()["items"]
    assert client.post("/api/labels", json={"labels": [{"index": first[0]["index"], "label": "3"}]}).status_code == 200
    second = client.get("/api/queue", params={"strategy": "margin", "n": 5}).json()["items"]
    assert runs == []
    # the same examples as a query that runs the model
    view = session._view
    labeled = np.isin(session.train_rows, list(_store(session.out).current()))
    fresh = active.query(
        view.classifier.model, view.classifier.state.head_state, session.dataset.x[session.train_rows], labeled, 5,
        strategy="margin", input_shape=view.classifier.input_shape,
        key=active.query_key(session.config.seed, view.step), calibration=view.classifier.calibration,
    )
    assert runs == ["model"]
    assert [int(session.train_rows[i]) for i in fresh.indices] == [item["index"] for item in second]
    assert first[0]["index"] not in [item["index"] for item in second]


def test_labels_undo_and_a_new_class(
    studio: tuple[StudioSession, TestClient], run: Path, rows: dict[str, Any]
) -> None:
    _, client = studio
    a, b, c = rows["unlabeled"][:3]
    reply = client.post("/api/labels", json={"labels": [{"index": a, "label": "3"}, {"index": b, "label": " 4 "}]})
    assert reply.status_code == 200 and reply.json()["added"] == 2 and reply.json()["num_labeled"] == 22
    again = client.post("/api/labels", json={"labels": [{"index": a, "label": "3"}]}).json()
    assert again["added"] == 0  # the label it holds already
    created = client.post("/api/labels", json={"labels": [{"index": c, "label": "smudge"}], "new_class": True})
    assert created.status_code == 200 and created.json()["new_classes"] == ["smudge"]
    state = client.get("/api/state").json()
    assert state["label_names"][-1] == "smudge" and state["shortcuts"]["smudge"] == "s"
    stored = _store(run)
    assert stored.current()[a] == "3" and stored.current()[b] == "4" and stored.current()[c] == "smudge"
    assert {e.source for e in stored.entries[-3:]} == {"studio"}
    assert client.get(f"/api/examples/{a}").json()["label"] == "3"
    assert a not in [i["index"] for i in client.get("/api/queue", params={"n": 50}).json()["items"]]
    removed = client.post("/api/undo", json={"index": a, "label": "3"})
    assert removed.status_code == 200 and [e["index"] for e in removed.json()["removed"]] == [a]
    assert a not in _store(run).current() and _store(run).current()[b] == "4"
    assert client.post("/api/labels", json={"labels": [{"index": a, "label": "8"}]}).status_code == 200


def test_two_clients_labeling_at_once_lose_nothing(
    studio: tuple[StudioSession, TestClient], run: Path, rows: dict[str, Any]
) -> None:
    session, first = studio
    second = TestClient(create_app(session, TOKEN))
    second.cookies.set(cookie_name(TOKEN), TOKEN)
    free = rows["unlabeled"][:60]
    shared = rows["unlabeled"][60]
    results: list[int] = []

    def label(client: TestClient, chosen: list[int], name: str) -> None:
        for index in chosen:
            results.append(client.post("/api/labels", json={"labels": [{"index": index, "label": name}]}).status_code)
        # both tabs label the same example, differently: one wins, the other is told
        results.append(client.post("/api/labels", json={"labels": [{"index": shared, "label": name}]}).status_code)

    threads = [
        threading.Thread(target=label, args=(first, free[0::2], "1")),
        threading.Thread(target=label, args=(second, free[1::2], "2")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results).count(200) == 61 and results.count(409) == 1
    current = _store(run).current()
    assert all(current[i] == "1" for i in free[0::2]) and all(current[i] == "2" for i in free[1::2])
    assert current[shared] in ("1", "2")
    assert len(current) == 20 + 61


def test_retrain_in_the_background_with_labels_given_meanwhile(
    studio: tuple[StudioSession, TestClient], run: Path, rows: dict[str, Any]
) -> None:
    session, client = studio
    a, b, c = rows["unlabeled"][:3]
    client.post("/api/labels", json={"labels": [{"index": a, "label": "blot"}, {"index": b, "label": "blot"}],
                                     "new_class": True})
    started = client.post("/api/retrain", json={"steps": 20})
    assert started.status_code == 202 and started.json()["state"] == "running"
    assert client.post("/api/retrain", json={"steps": 20}).status_code == 409
    # labeling goes on while it trains
    assert client.post("/api/labels", json={"labels": [{"index": c, "label": "5"}]}).status_code == 200
    job = session.wait(timeout=300)
    assert job["state"] == "done", job["message"]
    assert job["step"] == 20 and [h["step"] for h in job["history"]] == [10, 20]
    assert 0.0 <= job["accuracy"] <= 1.0 and job["version"] == 1
    assert 0.0 <= job["prediction_change"] <= 1.0  # how much of the unlabeled pool it changed
    state = client.get("/api/state").json()
    assert state["version"] == 1 and state["step"] == 50 and "blot" in state["model_labels"]
    assert client.get("/api/retrain").json()["state"] == "done"
    rounds = client.get("/api/history").json()["rounds"]
    assert [r["command"] for r in rounds] == ["train", "retrain"] and rounds[1]["labels"] == 22
    assert _store(run).current()[c] == "5"  # given during the retrain, kept for the next one
    assert rounds[1]["claimed_channels"]["blot"]  # the new class took free channels
    # the Channels panel says the same as rounds.jsonl about who owns them
    channels = client.get("/api/channels").json()["channels"]
    for c in rounds[1]["claimed_channels"]["blot"]:
        assert channels[c]["owner"] == "blot" and channels[c]["claimed"] and not channels[c]["free"]


def test_a_retrain_leaves_a_label_write_in_flight_alone(run: Path) -> None:
    """The studio writes labels.json while it retrains: that write's temporary file is no leftover."""
    stale = run / ".labels.json.stale"
    stale.write_bytes(b"{}")
    with StudioSession(run) as session:
        assert not stale.exists()  # opening the run repairs what an interrupted command left
        in_flight = run / ".labels.json.in-flight"
        in_flight.write_bytes(b"{}")  # as if add_labels were between its write and its rename
        client = TestClient(create_app(session, TOKEN))
        client.headers["X-SSVAE-Token"] = TOKEN
        assert client.post("/api/retrain", json={"steps": 5}).status_code == 202
        assert session.wait(timeout=300)["state"] == "done"
        assert in_flight.exists()


def test_a_cancelled_retrain_leaves_the_model_as_it_was(
    studio: tuple[StudioSession, TestClient], run: Path
) -> None:
    session, client = studio
    checkpoint = (run / "model.ckpt").read_bytes()
    metrics = (run / "metrics.jsonl").read_bytes()
    assert client.post("/api/retrain", json={"steps": 100_000}).status_code == 202
    deadline = time.monotonic() + 120
    while client.get("/api/retrain").json()["step"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.post("/api/retrain/cancel").json()["state"] == "running"
    job = session.wait(timeout=120)
    assert job["state"] == "cancelled" and "as it was" in job["message"] and job["version"] == 0
    assert (run / "model.ckpt").read_bytes() == checkpoint
    assert (run / "metrics.jsonl").read_bytes() == metrics
    assert client.get("/api/state").json()["version"] == 0


def test_shortcut_keys() -> None:
    assert shortcut_keys(["0", "1", "cat", "cow", "Dog", "??"]) == {
        "0": "0", "1": "1", "cat": "c", "cow": "o", "Dog": "d", "??": "2",
    }


def test_the_run_is_held_while_the_studio_is_open(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sheet = run.parent / "labels.csv"
    sheet.write_text("index,label\n5,5\n", encoding="utf-8")
    with StudioSession(run):
        assert main(["label", str(run), str(sheet)]) == 2
        assert "being written by another ssvae process" in capsys.readouterr().err
        with pytest.raises(Exception, match="another ssvae process"):
            StudioSession(run)


# --- the command line ------------------------------------------------------------------


def test_studio_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        (["studio", str(tmp_path / "missing"), "--port", "0"], "expects a run directory"),
        (["studio", str(tmp_path / "empty"), "--port", "0"], "is not a run directory"),
        (["studio", str(run), "--port", "70000"], "--port"),
        (["studio", str(run), "--port", "0", "--token", "short"], "at least 8"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert list((tmp_path / "empty").iterdir()) == []  # no lock left in a folder that is no run
    with __import__("socket").socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["studio", str(run), "--port", str(port)]) == 2
        assert "choose another --port" in capsys.readouterr().err


def _start_server(run: Path) -> tuple[subprocess.Popen[str], str]:
    import jax

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cache = jax.config.jax_compilation_cache_dir  # the session's XLA cache, when on (conftest)
    if cache:
        env.update({"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"})
    process = subprocess.Popen(
        [sys.executable, "-m", "ssvae_core.cli", "studio", str(run), "--port", "0", "--token", TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "?token=" in line:
            return process, line.strip().split("/?token=")[0]
    raise AssertionError("the studio did not start:\n" + "".join(lines))


def _call(base: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        base + path, data=None if body is None else json.dumps(body).encode("utf-8"),
        headers={"X-SSVAE-Token": TOKEN, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def test_a_server_killed_and_restarted_keeps_every_label(run: Path, rows: dict[str, Any]) -> None:
    chosen = rows["unlabeled"][:5]
    process, base = _start_server(run)
    try:
        for i, index in enumerate(chosen):
            _call(base, "/api/labels", {"labels": [{"index": index, "label": str(i)}]})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/api/state", timeout=30)
        assert refused.value.code == 403
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    # the killed server's lock went with it; the studio opens the run again and shows them
    with StudioSession(run) as session:
        client = TestClient(create_app(session, TOKEN))
        client.headers["X-SSVAE-Token"] = TOKEN
        current = {e["index"]: e["label"] for e in client.get("/api/history").json()["entries"]}
        assert all(current[index] == str(i) for i, index in enumerate(chosen))
        assert client.get("/api/state").json()["num_labeled"] == 25
    assert all(_store(run).current()[index] == str(i) for i, index in enumerate(chosen))


def test_the_server_stops_cleanly_on_ctrl_c(run: Path) -> None:
    process, base = _start_server(run)
    try:
        assert _call(base, "/api/state")["run"] == run.name
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0


def test_a_model_without_channels(tmp_path: Path) -> None:
    run = tmp_path / "standard"
    code = main(
        ["train", "--labels-per-class", "2", "--steps", "10", "--out", str(run), "--quiet", "--no-plots",
         "--set", "encoder.hidden=[8]", "--set", "decoder.hidden=[8]", "--set", "model.latent_dim=2",
         "--set", 'prior.name="standard"', "--set", 'head.name="softmax"', "--set", "train.log_every=10"]
    )
    assert code == 0
    with StudioSession(run) as session:
        client = TestClient(create_app(session, TOKEN))
        client.headers["X-SSVAE-Token"] = TOKEN
        assert client.get("/api/state").json()["has_channels"] is False
        points = client.get("/api/map").json()
        assert set(points["channel"]) == {None} and len(points["x"]) == len(points["index"])
        assert client.get("/api/channels").json()["channels"] == []
        missing = client.get("/api/channels/0.png")
        assert missing.status_code == 404 and "no channels" in missing.json()["error"]
        assert len(client.get("/api/queue", params={"strategy": "entropy", "n": 3}).json()["items"]) == 3
        refused = client.get("/api/queue", params={"strategy": "channel_entropy", "n": 3})
        assert refused.status_code == 400 and "channel" in refused.json()["error"]


def test_without_the_studio_extra_the_command_says_what_to_install(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "starlette", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "starlette.applications", None)
    monkeypatch.delitem(sys.modules, "ssvae_core.studio.server", raising=False)
    assert main(["studio", str(run), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'ssvae-core[studio]'" in err and "starlette" in err and err.count("\n") == 1


# --- two studios in one browser, bodies that are not plain JSON objects -----------------


def test_two_studios_in_one_browser_keep_their_own_cookies(run: Path, tmp_path: Path) -> None:
    """Cookies are shared by every port of a host: each server's cookie has its own name."""
    other_run = tmp_path / "other"
    shutil.copytree(run, other_run)
    other_token = "another-token-9876543210"
    assert cookie_name(TOKEN) != cookie_name(other_token)
    with StudioSession(run) as first, StudioSession(other_run) as second:
        jar: dict[str, str] = {}  # the browser's cookies for 127.0.0.1, whatever the port
        for session, token in ((first, TOKEN), (second, other_token)):
            page = TestClient(create_app(session, token)).get("/", params={"token": token})
            name, value = page.headers["set-cookie"].split(";")[0].split("=", 1)
            jar[name] = value
        assert len(jar) == 2  # the second page did not overwrite the first one's cookie
        for session, token, name in ((first, TOKEN, "run"), (second, other_token, "other")):
            browser = TestClient(create_app(session, token), cookies=jar)
            assert browser.get("/api/state").json()["run"] == name


def test_bodies_that_are_not_json_objects_get_a_4xx_and_errors_are_bounded(
    studio: tuple[StudioSession, TestClient], run: Path, rows: dict[str, Any]
) -> None:
    _, client = studio
    free_row = rows["unlabeled"][0]
    before = (run / STORE_NAME).read_bytes()
    plain = client.post("/api/labels", content=json.dumps({"labels": [{"index": free_row, "label": "1"}]}),
                        headers={"content-type": "text/plain"})
    assert plain.status_code == 415 and "application/json" in plain.json()["error"]
    assert client.post("/api/labels", content=b'{"labels": []}').status_code == 415  # no type at all
    for depth in (9, 100_000):
        nested = "[" * depth + "]" * depth
        reply = client.post("/api/labels", content=nested, headers={"content-type": "application/json"})
        assert reply.status_code == 400 and "levels deep" in reply.json()["error"], depth
    deep_item = {"labels": [{"index": free_row, "label": [[[[[[[["1"]]]]]]]]}]}
    assert client.post("/api/labels", json=deep_item).status_code == 400
    huge = client.post("/api/labels", json={"labels": [{"index": free_row, "label": "x" * (1 << 20)}],
                                            "new_class": True})
    assert huge.status_code == 400 and len(huge.json()["error"]) <= MAX_ERROR_CHARS
    wordy = client.post("/api/labels", json={"labels": [{"index": free_row, "label": "1"}], "y" * 5000: 1})
    assert wordy.status_code == 400 and len(wordy.json()["error"]) <= MAX_ERROR_CHARS
    assert (run / STORE_NAME).read_bytes() == before


# --- undo from the store, batches, corrections --------------------------------------------


def _client(session: StudioSession) -> TestClient:
    client = TestClient(create_app(session, TOKEN))
    client.headers["X-SSVAE-Token"] = TOKEN
    return client


def test_a_batch_is_undone_as_one_action_and_undo_outlives_the_page(run: Path, rows: dict[str, Any]) -> None:
    session = StudioSession(run)
    client = _client(session)
    a, b, c, d = rows["unlabeled"][:4]
    labeled = rows["labeled"][0]
    held = _store(run).current()[labeled]
    assert client.post("/api/labels", json={"labels": [{"index": a, "label": "3"}]}).status_code == 200
    batch = client.post("/api/labels", json={"labels": [{"index": i, "label": "5"} for i in (b, c, d)]})
    assert batch.json()["added"] == 3
    undone = client.post("/api/undo", json={})
    assert undone.status_code == 200
    assert sorted(e["index"] for e in undone.json()["removed"]) == sorted([b, c, d])
    assert undone.json()["num_labeled"] == 21
    assert set(_store(run).current()) & {b, c, d} == set()
    # a correction of a label from the split; undoing it gives the old label back
    other = str((int(held) + 1) % 10)
    assert client.post("/api/labels", json={"labels": [{"index": labeled, "label": other}]}).status_code == 409
    fixed = client.post("/api/labels", json={"labels": [{"index": labeled, "label": other}], "relabel": True})
    assert fixed.status_code == 200 and _store(run).current()[labeled] == other
    history = client.get("/api/history").json()["entries"]
    assert [e["current"] for e in history if e["index"] == labeled] == [True, False]
    session.close()
    # a new page, a new server: the undo is in the store, not in the page
    with StudioSession(run) as reopened:
        again = _client(reopened)
        restored = again.post("/api/undo", json={}).json()
        assert restored["removed"][0]["index"] == labeled and restored["restored"] == {str(labeled): held}
        assert [e["index"] for e in again.post("/api/undo", json={}).json()["removed"]] == [a]
        nothing = again.post("/api/undo", json={})
        assert nothing.status_code == 404 and "no label from 'studio'" in nothing.json()["error"]
    assert _store(run).current()[labeled] == held and a not in _store(run).current()


def test_label_issues_relabeled_or_kept_are_not_proposed_again(
    studio: tuple[StudioSession, TestClient], run: Path
) -> None:
    _, client = studio
    issues = client.get("/api/issues", params={"n": 6}).json()["items"]
    assert 1 < len(issues) <= 6
    current = _store(run).current()
    assert all(current[i["index"]] == i["label"] != i["suggested"] for i in issues)
    first, second = issues[0], issues[1]
    fixed = client.post("/api/labels", json={"labels": [{"index": first["index"], "label": first["suggested"]}],
                                             "relabel": True, "confirm": True})
    kept = client.post("/api/labels", json={"labels": [{"index": second["index"], "label": second["label"]}],
                                            "confirm": True})
    assert fixed.status_code == kept.status_code == 200 and kept.json()["added"] == 1
    store = _store(run)
    assert store.current()[first["index"]] == first["suggested"]
    assert store.entries[-1].confirmed and store.entries[-1].label == second["label"]
    again = {i["index"] for i in client.get("/api/issues", params={"n": 6}).json()["items"]}
    assert not again & {first["index"], second["index"]}
    assert client.get("/api/issues", params={"n": 0}).status_code == 400
    bad = client.post("/api/labels", json={"labels": [{"index": first["index"], "label": "1"}], "confirm": 1})
    assert bad.status_code == 400 and "'confirm' must be true or false" in bad.json()["error"]


def test_the_labels_download_as_csv_and_label_studio_json(studio: tuple[StudioSession, TestClient], run: Path) -> None:
    _, client = studio
    current = _store(run).current()
    table = client.get("/api/export.csv")
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    assert 'filename="run-labels.csv"' in table.headers["content-disposition"]
    lines = table.text.splitlines()
    assert lines[0] == "index,label,source,time,confirmed" and len(lines) == len(current) + 1
    tasks = client.get("/api/export.json").json()
    assert {t["id"]: t["annotations"][0]["result"][0]["value"]["choices"][0] for t in tasks} == current
    assert client.get("/api/export.txt").status_code == 404


def test_annotators_vote_and_the_history_reports_their_agreement(
    studio: tuple[StudioSession, TestClient], run: Path, rows: dict[str, Any]
) -> None:
    _, client = studio
    a, b = rows["unlabeled"][:2]
    for who, label in (("ana", "3"), ("ben", "5"), ("cy", "5")):
        reply = client.post("/api/labels", json={"labels": [{"index": a, "label": label}], "annotator": who})
        assert reply.status_code == 200, reply.text
    mine = client.post("/api/labels", json={"labels": [{"index": a, "label": "8"}], "annotator": "ana"})
    assert mine.status_code == 409 and "by 'ana'" in mine.json()["error"]  # one label per annotator
    assert client.post("/api/labels", json={"labels": [{"index": b, "label": "1"}], "annotator": "ana"}).status_code == 200
    assert _store(run).current()[a] == "5"  # the consensus
    history = client.get("/api/history").json()
    votes = history["agreement"]
    assert votes["shared"] == 1 and votes["agreement"] == round(2 / 3, 4)
    assert votes["annotators"]["ana"] == {"labels": 2, "shared": 1, "agreed": 0}
    assert votes["annotators"]["ben"] == {"labels": 1, "shared": 1, "agreed": 1}
    assert {e["annotator"] for e in history["entries"] if e["index"] == a} == {"ana", "ben", "cy"}
    bad = client.post("/api/labels", json={"labels": [{"index": b, "label": "1"}], "annotator": "\u202e"})
    assert bad.status_code == 400 and "annotator" in bad.json()["error"]
