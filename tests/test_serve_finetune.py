"""Fine-tuning from the label view: a real server trains, exports, checks and serves a tiny model, rolls
back, cancels; a server without torch shows the label view with fine-tuning off and says why.

The model is a barely trained scratch U-Net on the tiny synthetic dataset of the training tests, exported
at 64-pixel tiles so that a job (2 short epochs, FP32 export) takes seconds, not minutes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

from _serve_server import Server  # noqa: E402
from semphase.imageio import read_raw, write_image  # noqa: E402
from test_train_fixtures import make_dataset  # noqa: E402
from test_train_run import FAST  # noqa: E402

#: Enough steps for the tiny model to learn the painted strokes (labelled mIoU 0.42 -> 0.96 when measured).
TRAIN_ARGS = "--epochs 4 --steps-per-epoch 10 --tile 32 --batch-size 4 --threads 1 --precision fp32"
#: A job as short as it gets, for the outcomes that do not depend on what it learns.
SHORT_ARGS = "--epochs 1 " + " ".join(FAST)
NO_CHROMIUM = shutil.which("chromium") is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A scratch checkpoint and its FP32 export (64 px tiles), and micrographs of its kind."""
    root = tmp_path_factory.mktemp("tiny")
    data = make_dataset(root / "ds", groups=4)
    semphase = [sys.executable, "-m", "semphase"]
    train = [
        "train",
        str(data),
        "--out",
        str(root / "base"),
        "--arch",
        "unet-scratch",
        "--encoder-weights",
        "none",
    ]
    subprocess.run([*semphase, *train, "--epochs", "1", *FAST], check=True, capture_output=True, timeout=600)
    export = ["export", str(root / "base" / "best.pt"), "--out", str(root / "model"), "--tile", "64"]
    subprocess.run(
        [*semphase, *export, "--overlap", "16", "--no-fp16", "--no-int8", "--threads", "1"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    images = sorted((data / "AugmentedImages").iterdir())[:2]
    return {"checkpoint": root / "base" / "best.pt", "model": root / "model" / "model.onnx", "images": images}


def _project(root: Path, images: list[Path]) -> Path:
    (root / "images").mkdir(parents=True)
    for i, path in enumerate(images):
        write_image(root / "images" / f"field{i}.png", read_raw(path))
    return root


def _paint(url: str, name: str) -> None:
    strokes = [
        {"tool": "paint", "class": 0, "radius": 6, "points": [[10, 10], [50, 12]]},
        {"tool": "paint", "class": 1, "radius": 5, "points": [[20, 40], [40, 50]]},
    ]
    answer = httpx.post(f"{url}/project/images/{name}/strokes", json={"base": 0, "strokes": strokes})
    assert answer.status_code == 200, answer.text


def _wait_job(url: str, done, timeout: float = 400) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(url + "/project/finetune").json()
        if done(status):
            return status
        time.sleep(0.5)
    raise TimeoutError(f"fine-tuning did not get there: {status}")


@pytest.mark.skipif(NO_CHROMIUM, reason="no chromium binary on PATH (apt-get install chromium)")
def test_fine_tune_from_the_page_serves_the_new_model_rolls_back_and_cancels(tiny, tmp_path):
    pytest.importorskip("websockets")
    from _cdp import Browser

    root = _project(tmp_path / "project", tiny["images"])
    s = Server(
        tiny["model"],
        "--project",
        str(root),
        "--checkpoint",
        str(tiny["checkpoint"]),
        "--train-args",
        TRAIN_ARGS,
    )
    try:
        original = httpx.get(s.url + "/model").json()["sha256"]
        refused = httpx.post(s.url + "/project/finetune")
        assert refused.status_code == 409 and "nothing is labelled" in refused.json()["detail"]
        upload = tmp_path / "new field.tif"
        write_image(upload, read_raw(tiny["images"][0]))
        with Browser() as browser:
            browser.open(s.url + "/label")
            browser.wait_for("window.semphaseLabel && semphaseLabel.ready() && semphaseLabel.finetune()")
            browser.set_files("#upload", [upload])  # the whole loop from the page: add a micrograph ...
            browser.wait_for("semphaseLabel.image() === 'new_field' && semphaseLabel.ready()")
            assert (root / "images" / "new_field.tif").is_file()
            browser.evaluate("semphaseLabel.open('field0')")
            browser.wait_for("semphaseLabel.image() === 'field0' && semphaseLabel.ready()")
            assert browser.evaluate("document.getElementById('ft-start').disabled") is True  # no labels yet
            browser.evaluate("semphaseLabel.setView(0, 0, 8)")  # ... paint on one (8 screen px per pixel) ...
            left, top = browser.evaluate(
                "(() => { const r = document.getElementById('view').getBoundingClientRect(); "
                "return [Math.ceil(r.left), Math.ceil(r.top)]; })()"
            )
            browser.press("1")
            browser.drag([(left + 80, top + 80), (left + 240, top + 88), (left + 400, top + 96)])
            browser.press("2")
            browser.drag([(left + 160, top + 320), (left + 240, top + 360), (left + 320, top + 400)])
            browser.press("s", ctrl=True)
            browser.wait_for("semphaseLabel.version() === 1")
            browser.wait_for("!document.getElementById('ft-start').disabled")  # ... and fine-tune
            browser.evaluate("document.getElementById('ft-start').click()")
            browser.wait_for(
                "semphaseLabel.finetune().job && semphaseLabel.finetune().job.state !== 'running'",
                timeout=400,
            )
            job = browser.evaluate("semphaseLabel.finetune().job")
            assert job["state"] == "succeeded", job
            assert job["epochs"] == 4 and job["epoch"] == 4 and job["loss"] is not None
            assert job["after"]["miou"] > job["before"]["miou"]
            assert job["labels"] == {"field0": 1} and job["before"]["pixels"] == job["after"]["pixels"] > 0
            new = httpx.get(s.url + "/model").json()["sha256"]
            assert new != original
            browser.wait_for(f"semphaseLabel.model() === {json.dumps(new)} && semphaseLabel.ready()")
            assert browser.evaluate("document.querySelector('#models li.serving').dataset.version") == "1"
            progress = browser.evaluate("document.getElementById('ft-progress').textContent")
            assert "serving version 1" in progress and "mIoU on the trained labels" in progress
            browser.wait_for("semphaseLabel.tilesLoaded()")
            shot = tmp_path / "finetune.png"
            browser.screenshot(shot)

            browser.evaluate(
                "document.querySelector('#models li[data-version=\"0\"] button').click()"
            )  # roll back
            browser.wait_for("document.querySelector('#models li.serving').dataset.version === '0'")
            assert httpx.get(s.url + "/model").json()["sha256"] == original
            version1 = root / ".semphase" / "models" / "v1"
            assert (version1 / "export" / "model.onnx").is_file() and (version1 / "run" / "best.pt").is_file()

            # one labelled micrograph: nothing to hold out, and the page says how to get a held-out score
            assert browser.evaluate("document.getElementById('ft-holdout').disabled") is True
            why = browser.evaluate("document.getElementById('ft-holdout-text').textContent")
            assert "second micrograph" in why
            _paint(s.url, "field1")  # a second one (labelled elsewhere): one of the two is held out
            browser.evaluate("semphaseLabel.refresh()")
            browser.wait_for("!document.getElementById('ft-holdout').disabled")
            held = browser.evaluate("semphaseLabel.finetune().holdout.names")
            assert held in (["field0"], ["field1"])
            text = browser.evaluate("document.getElementById('ft-holdout-text').textContent")
            assert text.startswith(f"hold out {held[0]}:")
            browser.evaluate("document.getElementById('ft-start').click()")
            browser.wait_for("semphaseLabel.finetune().job && semphaseLabel.finetune().job.version === 2")
            browser.wait_for("!document.getElementById('ft-cancel').hidden")
            assert browser.evaluate("semphaseLabel.finetune().job.heldout") == held
            browser.wait_for(  # each epoch is scored on the held-out labels, and the page shows it
                "document.getElementById('ft-progress').textContent.includes('held-out mIoU')", timeout=120
            )
            browser.evaluate("document.getElementById('ft-cancel').click()")
            browser.wait_for("semphaseLabel.finetune().job.state === 'cancelled'", timeout=60)
    finally:
        _, err = s.stop()
    assert "Traceback" not in err
    assert json.loads((root / ".semphase/models/v2/job.json").read_text())["state"] == "cancelled"
    index = json.loads((root / ".semphase/models/index.json").read_text())
    assert [v["version"] for v in index["versions"]] == [0, 1] and index["serving"] == 0
    out = os.environ.get("SEMPHASE_FINETUNE_SCREENSHOT")  # docs/serve-finetune.png is made this way
    if out:
        shutil.copyfile(shot, out)


@pytest.mark.parametrize("outcome", ["self-check", "worse"])
def test_a_new_model_that_fails_its_check_or_scores_worse_is_not_served(tiny, tmp_path, monkeypatch, outcome):
    """In-process: the new file refused by its self-check, or scoring lower on the labelled pixels."""
    import semphase.serve.finetune as finetune
    from semphase.errors import InputError
    from semphase.runtime.model import load_model
    from semphase.runtime.segment import SegmentOptions
    from semphase.runtime.suggest import model_table
    from semphase.serve.finetune import FineTuner
    from semphase.serve.labelling import Labelling
    from semphase.serve.project import Project
    from semphase.serve.service import Service

    served = load_model(tiny["model"])
    service = Service(served, SegmentOptions(format="png"))
    root = _project(tmp_path / "project", tiny["images"])
    project = Project(root, model_table(served))
    labelling = Labelling(project, service)

    def load(path: Path):
        if outcome == "self-check":
            raise InputError("self-check failed: 97.1 % of the reference pixels agree (needs 99.5 %)", path)
        return load_model(path)

    if outcome == "worse":  # the served model first, the new one second
        scores = iter([{"miou": 0.8, "iou": {}, "pixels": 10}, {"miou": 0.6, "iou": {}, "pixels": 10}])
        monkeypatch.setattr(finetune, "labelled_score", lambda *args: next(scores))

    tuner = FineTuner(labelling, tiny["model"], tiny["checkpoint"], load, SHORT_ARGS)
    try:
        from semphase.serve.strokes import parse_strokes

        stroke = [{"tool": "paint", "class": 2, "radius": 8, "points": [[30, 30]]}]
        project.save_strokes("field1", 0, parse_strokes(stroke, 5))
        tuner.start()
        tuner._thread.join(timeout=400)
        status = tuner.status()
        assert service.model is served and status["serving"] == 0
        if outcome == "self-check":
            assert status["job"]["state"] == "failed" and "self-check" in status["job"]["message"]
            assert len(status["versions"]) == 1
        else:
            assert status["job"]["state"] == "kept" and "0.800 -> 0.600" in status["job"]["message"]
            assert [v["version"] for v in status["versions"]] == [0, 1]  # kept, servable on request
            tuner.serve_version(1)
            assert service.model is not served and tuner.status()["serving"] == 1
    finally:
        tuner.close()
        service.close()
        project.close()


def test_a_held_out_micrograph_is_scored_each_epoch_not_trained_on_and_decides(tiny, tmp_path, monkeypatch):
    """Two labelled micrographs: one is the run's val split (history, job and version show its score),
    the served-or-kept decision follows it; ``holdout=False`` trains on both and decides on them."""
    import semphase.serve.finetune as finetune
    from semphase.runtime.model import load_model
    from semphase.runtime.segment import SegmentOptions
    from semphase.runtime.suggest import model_table
    from semphase.serve.labelling import Labelling
    from semphase.serve.project import Project
    from semphase.serve.service import Service
    from semphase.serve.strokes import parse_strokes

    served = load_model(tiny["model"])
    service = Service(served, SegmentOptions(format="png"))
    root = _project(tmp_path / "project", tiny["images"])
    project = Project(root, model_table(served))
    labelling = Labelling(project, service)
    args = "--epochs 2 " + " ".join(FAST)
    tuner = finetune.FineTuner(labelling, tiny["model"], tiny["checkpoint"], load_model, args)
    real_score = finetune.labelled_score
    calls = []

    shares_given = []

    def score(model, project_, names, shares=None):  # real scores, then: worse on held-out labels only
        result = real_score(model, project_, names, shares)
        calls.append((model is served, list(names)))
        shares_given.append(shares)
        if tuner._job.heldout:
            result["miou"] = {True: 0.3, False: 0.9}[model is served]
            if names == tuner._job.heldout:
                result["miou"] = {True: 0.5, False: 0.4}[model is served]
        return result

    monkeypatch.setattr(finetune, "labelled_score", score)
    try:
        assert tuner.status()["holdout"] == {"names": [], "reason": "nothing is labelled yet"}
        stroke = [{"tool": "paint", "class": 2, "radius": 8, "points": [[30, 30], [40, 44]]}]
        # every class somewhere, so that the run corrects its prior and the scores weigh by its shares
        stroke += [
            {"tool": "paint", "class": c, "radius": 3, "points": [[8 + 12 * c, 6]]} for c in (0, 1, 3, 4)
        ]
        project.save_strokes("field0", 0, parse_strokes(stroke, 5))
        assert "second micrograph" in tuner.status()["holdout"]["reason"]
        project.save_strokes("field1", 0, parse_strokes(stroke, 5))
        held = tuner.status()["holdout"]["names"]
        assert held in (["field0"], ["field1"])
        (trained,) = {"field0", "field1"} - set(held)

        tuner.start()
        tuner._thread.join(timeout=400)
        job = tuner.status()["job"]
        run = Path(job["folder"]) / "run"
        split = json.loads((run / "split.json").read_text())
        assert split["val"] == [f"{held[0]}.png"] and split["train"] == [f"{trained}.png"]
        with open(run / "history.csv") as fh:
            scores = [float(row["val_miou"]) for row in csv.DictReader(fh)]
        assert len(scores) == 2 and all(0 <= v <= 1 for v in scores)  # every epoch, on the held-out labels
        assert job["epoch"] == 2 and job["val_miou"] == scores[-1] and job["best_val_miou"] == max(scores)
        assert job["heldout"] == held and (True, held) in calls and (False, held) in calls
        shares = finetune.estimated_shares(run)
        assert shares is not None and len(shares_given) == 4 and all(g == shares for g in shares_given)
        assert job["class_shares"] == shares
        assert (True, [trained]) in calls and (False, [trained]) in calls
        assert job["state"] == "kept", job  # better on what it trained on, worse held out: not served
        assert "held-out" in job["message"] and "0.500 -> 0.400" in job["message"]
        index = json.loads((root / ".semphase/models/index.json").read_text())
        assert index["holdout"] == held and service.model is served
        version = index["versions"][1]
        assert version["heldout"] == held and version["heldout_miou_before"] == 0.5
        assert version["heldout_miou_after"] == 0.4 and version["labelled_miou_after"] == 0.9

        calls.clear()
        tuner.start(holdout=False)  # both train; the decision on the trained labels (real scores)
        tuner._thread.join(timeout=400)
        job = tuner.status()["job"]
        split = json.loads((Path(job["folder"]) / "run" / "split.json").read_text())
        assert split["val"] == [] and split["train"] == ["field0.png", "field1.png"]
        assert job["heldout"] == [] and job["val_miou"] is None and job["heldout_before"] is None
        assert {tuple(names) for _, names in calls} == {("field0", "field1")}
        assert tuner.status()["holdout"]["names"] == held  # the record stays for the next job
    finally:
        tuner.close()
        service.close()
        project.close()


def test_without_torch_the_label_view_works_and_says_why_fine_tuning_is_off(tiny, tmp_path):
    from test_layering import BLOCKER

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        BLOCKER.format(names={"torch", "torchvision", "segmentation_models_pytorch"})
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    root = _project(tmp_path / "project", tiny["images"])
    s = Server(tiny["model"], "--project", str(root), "--checkpoint", str(tiny["checkpoint"]), env=env)
    try:
        status = httpx.get(s.url + "/project/finetune").json()
        assert status["available"] is False and "pip install 'semphase[train]'" in status["reason"]
        refused = httpx.post(s.url + "/project/finetune")
        assert refused.status_code == 409 and "train extra" in refused.json()["detail"]
        _paint(s.url, "field1")  # labelling itself works
        assert httpx.post(s.url + "/project/images/field1/predict", timeout=120).status_code == 200
        if not NO_CHROMIUM:
            pytest.importorskip("websockets")
            from _cdp import Browser

            with Browser() as browser:
                browser.open(s.url + "/label")
                browser.wait_for("window.semphaseLabel && semphaseLabel.ready() && semphaseLabel.finetune()")
                assert browser.evaluate("document.getElementById('ft-start').disabled") is True
                assert "train extra" in browser.evaluate("document.getElementById('ft-status').textContent")
    finally:
        _, err = s.stop()
    assert "Traceback" not in err


def test_a_checkpoint_that_is_not_the_models_is_refused_in_one_line(tiny, tmp_path):
    other = tmp_path / "other.pt"
    other.write_bytes(tiny["checkpoint"].read_bytes() + b"\0")
    root = _project(tmp_path / "project", tiny["images"])
    answer = subprocess.run(
        [sys.executable, "-m", "semphase", "serve", str(tiny["model"]), "--port", "0", "--project", str(root),
         "--checkpoint", str(other)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert answer.returncode == 2 and "not the checkpoint model.onnx was exported from" in answer.stderr
    assert "Traceback" not in answer.stderr
    s = Server(tiny["model"], "--project", str(root))
    s.stop()
