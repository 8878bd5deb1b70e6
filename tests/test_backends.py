"""Backends (semphase.runtime.backends): onnxruntime or OpenVINO run the network, the self-check runs on the
one that will be used, ``auto`` only ever picks a self-checked one, and every result says which ran."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from _cli import run_semphase
from _isolated import ran_in_child
from _runtime_models import micrograph, model_with_reference
from semphase.errors import InputError
from semphase.imageio import read_raw, write_image
from semphase.runtime import backends
from semphase.runtime.model import load_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return model_with_reference(tmp_path_factory.mktemp("model"), "model", variant="fp32")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test measures into its own choice cache."""
    monkeypatch.setenv("SEMPHASE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "choices.json"


def test_onnxruntime_is_the_default_and_gives_the_masks_of_before(model, tmp_path, capsys):
    """``--backend onnxruntime`` is the old path: the same session, bit for bit the same masks."""
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    write_image(image, micrograph(160, 200, seed=4))
    from semphase.runtime.segment import segment_file

    plain = load_model(model)
    assert plain.backend.name == "onnxruntime" and plain.backend.session is plain.session
    segment_file(plain, image, tmp_path / "library")
    code, _, err = run_semphase(
        ["segment", model, image, "--out", tmp_path / "cli", "--backend", "onnxruntime", "-q"], capsys
    )
    assert code == 0, err
    library, cli = (tmp_path / d / "a_mask.png" for d in ("library", "cli"))
    assert library.read_bytes() == cli.read_bytes()
    record = json.loads((tmp_path / "cli" / "a.json").read_text())["model"]
    assert record["backend"]["name"] == "onnxruntime" and record["backend"]["choice"] == "requested"


def test_two_streams_give_the_masks_of_one_and_every_result_records_them(model, tmp_path, capsys):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    write_image(image, micrograph(300, 340, seed=5))  # 2 x 2 tiles of 192 px: batches to split
    for streams in ("1", "2"):
        argv = ["segment", model, image, "--out", tmp_path / streams, "--streams", streams, "--threads", "2"]
        code, _, err = run_semphase([*argv, "--tile", "192", "--backend", "onnxruntime", "-q"], capsys)
        assert code == 0, err
    one, two = (json.loads((tmp_path / d / "a.json").read_text())["model"] for d in ("1", "2"))
    assert (one["streams"], one["threads"]) == (1, 2) and (two["streams"], two["threads"]) == (2, 1)
    assert (tmp_path / "1" / "a_mask.png").read_bytes() == (tmp_path / "2" / "a_mask.png").read_bytes()
    with pytest.raises(InputError, match="streams must be >= 1"):
        load_model(model, streams=0)


def test_streams_follow_the_threads_on_a_cpu_and_stay_one_on_a_gpu(monkeypatch):
    from semphase import machine
    from semphase.runtime.model import plan_streams

    cpu, gpu = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(machine, "physical_cores", lambda: 8)
    assert plan_streams(None, None, cpu) == (4, 2)  # every core, two streams of half of them
    assert plan_streams(6, None, cpu) == (3, 2) and plan_streams(6, 3, cpu) == (2, 3)
    assert plan_streams(1, None, cpu) == (1, 1)  # one thread: one stream, as before streams
    assert plan_streams(None, None, gpu) == (None, 1) and plan_streams(4, 1, cpu) == (4, 1)
    monkeypatch.setattr(machine, "physical_cores", lambda: 1)
    assert plan_streams(None, None, cpu) == (None, 1)  # onnxruntime's own default, as before


def test_timing_runs_one_call_per_stream_at_once():
    import threading

    barrier = threading.Barrier(2, timeout=5)  # broken when the calls of a round come one at a time

    def run(x):
        barrier.wait()
        return x

    assert backends.timed(run, np.zeros(1), streams=2) >= 0.0


def test_a_missing_openvino_is_one_line_for_openvino_and_onnxruntime_for_auto(
    model, monkeypatch, capsys, tmp_path
):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    with pytest.raises(InputError, match=r"needs OpenVINO: pip install 'semphase\[openvino\]'"):
        load_model(model, backend="openvino")
    auto = load_model(model, backend="auto")
    assert auto.backend.name == "onnxruntime" and "not installed" in auto.backend_choice
    image = tmp_path / "a.png"
    write_image(image, micrograph(64, 64, seed=1))
    code, _, err = run_semphase(
        ["segment", model, image, "--out", tmp_path / "o", "--backend", "openvino"], capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "semphase[openvino]" in err


class Disagreeing:
    """A backend whose outputs are wrong on a share of the pixels (a miscompiled graph, a bad kernel)."""

    name, version, precision = "openvino", "simulated", "f32"

    def __init__(self, source, threads, path, f32=False, streams=1) -> None:
        self.calls = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = np.zeros((x.shape[0], 5, x.shape[2], x.shape[3]), np.float32)
        out[:, 3] = 1.0  # every pixel class 3
        return out


def test_a_backend_that_misses_the_reference_is_never_used(model, monkeypatch):
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    monkeypatch.setattr(backends, "import_openvino", lambda: None)
    monkeypatch.setattr(backends, "OpenVinoBackend", Disagreeing)
    asked = load_model(model, backend="openvino")
    assert asked.backend.name == "onnxruntime"
    assert "fails the self-check" in asked.backend_choice and asked.self_check.status == "passed"
    auto = load_model(model, backend="auto")
    assert auto.backend.name == "onnxruntime" and "fails the self-check" in auto.backend_choice
    assert auto.describe()["backend"]["name"] == "onnxruntime"


class Agreeing:
    """A backend that computes what onnxruntime computes, through another call."""

    name, version = "openvino", "simulated"
    session = None
    #: share of pixels a reduced precision flips (0: computes what onnxruntime computes)
    noise = 0.0

    def __init__(self, source, threads, path, f32=False, streams=1) -> None:
        from semphase.runtime.session import create_session

        self.session = create_session(source, threads=threads)
        self.precision = "f32" if f32 or not self.noise else "bf16"

    def run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
        if self.precision == "bf16":  # a reduced precision changes the phase of a few pixels
            flat = out.transpose(0, 2, 3, 1).reshape(-1, out.shape[1])
            changed = np.random.default_rng(1).permutation(len(flat))[: int(self.noise * len(flat))]
            flat[changed] = np.roll(flat[changed], 1, axis=1)
            out = flat.reshape(out.shape[0], out.shape[2], out.shape[3], -1).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out)


def test_auto_picks_the_faster_self_checked_backend_and_remembers_it(model, monkeypatch, cache):
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    monkeypatch.setattr(backends, "import_openvino", lambda: None)
    monkeypatch.setattr(backends, "OpenVinoBackend", Agreeing)
    speeds = {"onnxruntime": 0.2, "openvino": 0.1}
    monkeypatch.setattr(backends, "timed", lambda run, x, streams=1: speeds[run.__self__.backend.name])
    first = load_model(model, backend="auto")
    assert first.backend.name == "openvino" and "2.00x faster" in first.backend_choice
    assert first.self_check.status == "passed" and "measured now" in first.backend_choice
    assert json.loads(cache.read_text())  # one entry, keyed by model, machine, versions, threads
    speeds.update(onnxruntime=0.01)  # would now win, but the choice was measured already
    again = load_model(model, backend="auto")
    assert again.backend.name == "openvino" and "measured 20" in again.backend_choice
    other_threads = load_model(model, backend="auto", threads=1)  # another key: measured again
    assert other_threads.backend.name == "onnxruntime" and "measured now" in other_threads.backend_choice


def test_auto_never_picks_an_unverified_backend(model, monkeypatch):
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    monkeypatch.setattr(backends, "OpenVinoBackend", Agreeing)
    unverified = load_model(model, backend="auto", verify=False)
    assert unverified.backend.name == "onnxruntime" and "verify is off" in unverified.backend_choice


def test_openvino_runs_the_file_and_every_result_says_so(model, tmp_path, capsys, request):
    pytest.importorskip("openvino")
    if ran_in_child(request):  # OpenVINO stays loaded in a process for good (tests/_isolated.py)
        return
    image = tmp_path / "a.png"
    write_image(image, micrograph(160, 200, seed=2))
    argv = ["segment", model, image, "--out", tmp_path / "ov", "--backend", "openvino", "-q"]
    code, _, err = run_semphase(argv, capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "ov" / "a.json").read_text())["model"]
    assert record["backend"]["name"] == "openvino" and record["backend"]["version"][:2] == "20"
    assert record["self_check"]["status"] == "passed"
    code, _, err = run_semphase(["segment", model, image, "--out", tmp_path / "ort", "-q"], capsys)
    assert code == 0, err
    ov, ort = (read_raw(tmp_path / d / "a_mask.png") for d in ("ov", "ort"))
    assert ov.shape == ort.shape == (160, 200) and (ov == ort).mean() > 0.999
    # two streams: OpenVINO compiles two, each calling thread has its own request, the masks are the same
    two = load_model(model, backend="openvino", threads=2, streams=2)
    assert two.streams == 2 and int(two.backend.compiled.get_property("NUM_STREAMS")) == 2
    from semphase.runtime.sliding import segment_array

    pixels = micrograph(300, 340, seed=5)
    one = load_model(model, backend="openvino", threads=2, streams=1)
    assert (segment_array(two, pixels, tile=192) == segment_array(one, pixels, tile=192)).all()


@pytest.mark.parametrize(("variant", "precision"), [("fp32", "f32"), ("int8", "bf16")])
def test_a_reduced_precision_must_reach_the_fp16_gate_on_a_float_file(
    variant, precision, monkeypatch, tmp_path
):
    """OpenVINO's bf16 default flipping 0.3 % of the pixels: enough for an INT8 file's own requirement
    (99.5 %), not for a FP32 file, which is compiled again in f32."""
    path = model_with_reference(tmp_path, variant, variant=variant)
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    monkeypatch.setattr(backends, "import_openvino", lambda: None)
    monkeypatch.setattr(Agreeing, "noise", 0.003)
    monkeypatch.setattr(backends, "OpenVinoBackend", Agreeing)
    model = load_model(path, backend="openvino")
    assert model.backend.name == "openvino" and model.backend.precision == precision
    assert model.describe()["backend"]["precision"] == precision
    assert model.self_check.session_options == {"openvino.inference_precision": precision}
