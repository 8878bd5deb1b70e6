"""The pure pieces of `semphase benchmark`: percentiles, throughput, machine parsing, peak RSS, agreement."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from semphase.benchmarks.accuracy import ParityRun, agreement_counts, agreement_from_counts
from semphase.benchmarks.rss import maxrss_to_mb, run_child
from semphase.benchmarks.timing import latency_summary, megapixels, mpix_per_s, percentile, time_runs
from semphase.machine import (
    INT8_FLAGS,
    count_processor_records,
    instruction_sets,
    parse_cpuinfo,
    parse_meminfo,
)

# Two logical CPUs of one core each (hyper-threads off), shortened from a real Sapphire Rapids VM.
CPUINFO_X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
physical id\t: 0
core id\t\t: 0
cpu cores\t: 2
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
physical id\t: 0
core id\t\t: 1
cpu cores\t: 2
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni
"""

# An older desktop: 4 logical CPUs on 2 cores (hyper-threading), AVX2 but no AVX-512.
CPUINFO_HT = "".join(
    f"processor\t: {i}\nmodel name\t: Intel(R) Core(TM) i5-7200U CPU @ 2.50GHz\nphysical id\t: 0\n"
    f"core id\t\t: {i // 2}\nflags\t\t: fpu sse2 avx avx2 fma\n\n"
    for i in range(4)
)

CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp
CPU implementer\t: 0x41

processor\t: 1
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp
"""


def test_percentile_interpolates_linearly_like_numpy():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)  # position 0.95 * 3 = 2.85 -> 3 + 0.85
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([7.0], 95) == 7.0


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")]])
def test_percentile_rejects_empty_or_non_finite(bad):
    with pytest.raises(ValueError):
        percentile(bad, 50)


def test_latency_summary_reports_per_call_and_per_tile():
    summary = latency_summary([0.10, 0.20, 0.30, 0.40, 1.00], batch=4)
    assert summary["runs"] == 5
    assert summary["median_ms"] == pytest.approx(300.0)
    assert summary["p95_ms"] == pytest.approx(880.0)
    assert summary["min_ms"] == pytest.approx(100.0) and summary["max_ms"] == pytest.approx(1000.0)
    assert summary["per_tile_ms"] == pytest.approx(75.0)
    assert summary["tiles_per_s"] == pytest.approx(4 / 0.3)


def test_throughput_in_megapixels_per_second():
    assert megapixels(4096, 4096) == pytest.approx(16.777216)
    assert mpix_per_s(1000, 2000, 0.5) == pytest.approx(4.0)
    assert mpix_per_s(1000, 1000, 0.0) is None
    assert mpix_per_s(1000, 1000, float("nan")) is None


def test_time_runs_discards_warmup_calls():
    calls = []
    times = time_runs(lambda: calls.append(1), warmup=3, runs=2)
    assert len(calls) == 5 and len(times) == 2 and all(t >= 0 for t in times)


def test_parse_cpuinfo_reads_model_cores_and_int8_flags():
    info = parse_cpuinfo(CPUINFO_X86)
    assert info["cpu"] == "Intel(R) Xeon(R) Platinum 8488C"
    assert info["logical_cpus"] == 2 and info["physical_cores"] == 2
    isa = instruction_sets(info["flags"], {})
    assert isa == {flag: True for flag in INT8_FLAGS}


def test_parse_cpuinfo_counts_hyperthreads_once_and_sees_missing_flags():
    info = parse_cpuinfo(CPUINFO_HT)
    assert info["logical_cpus"] == 4 and info["physical_cores"] == 2
    isa = instruction_sets(info["flags"], {})
    assert isa["avx2"] is True
    assert isa["avx512_vnni"] is False and isa["amx_int8"] is False and isa["avx_vnni"] is False
    # What this process's CPUID says wins where numpy knows the flag (under QEMU user mode /proc/cpuinfo
    # describes the host); the OS flags answer the rest.
    isa = instruction_sets(info["flags"], {"AVX512VNNI": True, "AVX2": False})
    assert isa["avx512_vnni"] is True and isa["avx2"] is False and isa["amx_int8"] is False


def test_windows_processor_records_are_counted_one_per_core():
    """What GetLogicalProcessorInformationEx(RelationProcessorCore) returns on a 4-core PC with
    hyper-threading: four variable-size records (relationship 0, their size, then the core's group masks)."""

    def record(size: int) -> bytes:
        return (0).to_bytes(4, "little") + size.to_bytes(4, "little") + bytes(size - 8)

    four = record(56) + record(48) * 3  # a record's size is its own, not a fixed stride
    assert count_processor_records(four) == 4
    assert count_processor_records(four + b"\x00" * 6) == 4  # a tail shorter than a header is not a core
    assert count_processor_records(four[:-1]) == 3  # nor a record cut short
    assert count_processor_records(record(48) + bytes(8)) == 1  # a zero size ends the walk
    assert count_processor_records(b"") == 0


def test_parse_cpuinfo_arm_and_unknowns_stay_unknown():
    info = parse_cpuinfo(CPUINFO_ARM)
    assert info["logical_cpus"] == 2 and info["cpu"] is None and "asimd" in info["flags"]
    # No OS flag list (Windows): numpy's detection where it has an answer, None (unknown) elsewhere.
    isa = instruction_sets(None, {"AVX512VNNI": False, "AVX2": True})
    assert isa["avx512_vnni"] is False and isa["avx2"] is True and isa["amx_int8"] is None


def test_parse_meminfo_total_in_bytes():
    assert parse_meminfo("MemTotal:       24683656 kB\nMemFree: 1 kB\n") == 24683656 * 1024
    assert parse_meminfo("nothing here\n") is None


def test_maxrss_units_per_platform():
    assert maxrss_to_mb(2048, "linux") == pytest.approx(2.0)
    assert maxrss_to_mb(2 * 1024**2, "darwin") == pytest.approx(2.0)


_CHILD_ALLOCATES_100MB = (
    "import json, numpy as np\n"
    "from semphase.benchmarks.rss import own_peak_rss_mb\n"
    "a = np.ones(100 * 2**20, np.uint8)\n"
    "print(json.dumps(own_peak_rss_mb()))\n"
)


def test_child_reports_its_own_peak_rss_not_the_parents():
    # Exact memory accounting (VmHWM / rusage), not timing: the margins below are 100 MiB and more against
    # differences of 0 or 400 MiB, so they do not depend on the machine.
    import json

    baseline = run_child([sys.executable, "-c", _CHILD_ALLOCATES_100MB])
    held = np.ones(400 * 2**20, np.uint8)  # this process grows by 400 MiB before the second child starts
    loaded = run_child([sys.executable, "-c", _CHILD_ALLOCATES_100MB])
    assert int(held[-1]) == 1
    for child in (baseline, loaded):
        assert child.returncode == 0, child.stderr
    (first, source), (second, _) = json.loads(baseline.stdout), json.loads(loaded.stdout)
    if source == "unknown":
        pytest.skip("this platform reports no peak RSS")
    assert first > 100 and second > 100  # the child's own 100 MiB are seen
    assert abs(second - first) < 50  # and the parent's 400 MiB are not
    if sys.platform.startswith("linux"):
        # What the kernel's rusage says instead: at exec it keeps the replaced (parent's) high-water mark.
        assert loaded.rusage_peak_mb > baseline.rusage_peak_mb + 300


def test_run_child_returns_status_and_output_of_a_failing_child():
    failed = run_child([sys.executable, "-c", "import sys; print('out'); sys.exit('broken model')"])
    assert failed.returncode == 1 and failed.stdout.strip() == "out" and "broken model" in failed.stderr


def test_agreement_counts_and_per_class_fractions():
    ref = np.array([[0, 0, 1, 1], [2, 2, 2, 2]], np.uint8)
    other = np.array([[0, 1, 1, 1], [2, 2, 0, 255]], np.uint8)  # 255: no class, its own bin
    counts = agreement_counts(ref, other, 3)
    assert counts.shape == (4, 4) and counts.sum() == 8
    overall, per_class = agreement_from_counts(counts)
    assert overall == pytest.approx(5 / 8)
    assert per_class == pytest.approx([0.5, 1.0, 0.5])


def test_parity_run_scores_agreement_and_deltas_and_survives_a_failed_variant():
    truth = np.zeros((8, 8), np.uint8)
    truth[:, 4:] = 1
    wrong = truth.copy()
    wrong[:, 4] = 0  # one column of class 1 lost
    run = ParityRun(["a", "b"], ["fp32", "int8", "fp16"])
    run.add("x.png", truth, {"fp32": truth, "int8": wrong, "fp16": truth})
    run.fail("fp16", "cannot load")
    rows = {r["variant"]: r for r in run.rows()}
    assert rows["fp32"]["miou"] == pytest.approx(1.0) and rows["fp32"]["agreement_vs_fp32"] == 1.0
    assert rows["int8"]["agreement_vs_fp32"] == pytest.approx(56 / 64)
    assert rows["int8"]["agreement_per_class_vs_fp32"] == pytest.approx([1.0, 0.75])
    assert rows["int8"]["agreement_vs_pytorch"] is None and rows["int8"]["delta_vs_pytorch"] is None
    expected_iou_b = 24 / 32
    assert rows["int8"]["per_class"]["iou"][1] == pytest.approx(expected_iou_b)
    assert rows["int8"]["delta_vs_fp32"]["iou"][1] == pytest.approx(expected_iou_b - 1.0)
    assert rows["int8"]["delta_vs_fp32"]["miou"] == pytest.approx(rows["int8"]["miou"] - 1.0)
    assert rows["fp16"]["status"] == "failed" and rows["fp16"]["reason"] == "cannot load"
    assert rows["fp16"]["miou"] is None


def _tiny_report() -> dict:
    """A report dict as run_benchmark writes it, with one failed variant whose reason needs escaping."""
    ok = {
        "variant": "fp32",
        "status": "ok",
        "reason": None,
        "miou": 0.5,
        "mdice": 0.6,
        "mbf1": 0.7,
        "per_class": {"iou": [0.5, None], "dice": [0.6, None], "bf1": [0.7, None]},
        "agreement_vs_fp32": 1.0,
        "agreement_vs_pytorch": None,
        "delta_vs_fp32": {"miou": 0.0, "iou": [0.0, None], "dice": [0.0, None], "bf1": [0.0, None]},
    }
    bad = {
        "variant": "fp16",
        "status": "failed",
        "reason": "bad | <script>x</script>",
        "miou": None,
        "mdice": None,
        "mbf1": None,
        "per_class": {"iou": [None, None], "dice": [None, None], "bf1": [None, None]},
        "agreement_vs_fp32": None,
        "agreement_vs_pytorch": None,
    }
    return {
        "command": "semphase benchmark m --data d --out o",
        "classes": ["Matrix", "Void"],
        "settings": {
            "reference": "fp32",
            "threads": 2,
            "repeat": 3,
            "warmup": 1,
            "batch": 4,
            "e2e_repeat": 1,
        },
        "machine": {"cpu": "Test CPU", "instruction_sets": {"amx_int8": None}, "versions": {"numpy": "2"}},
        "data": {"selection": "all 2 images"},
        "variants": [
            {"variant": "fp32", "file": "model.onnx", "size_mb": 1.0, "status": "ok"},
            {
                "variant": "fp16",
                "file": "model.fp16.onnx",
                "size_mb": 0.5,
                **{k: bad[k] for k in ("status", "reason")},
            },
        ],
        "accuracy": [ok, bad],
        "large_image": [],
        "latency": [
            {
                "variant": "fp32",
                "batch": 1,
                "tile": 512,
                "median_ms": 12.345,
                "p95_ms": 15.0,
                "per_tile_ms": 12.345,
                "tiles_per_s": 81.0,
                "status": "ok",
            }
        ],
        "speed": [
            {
                "variant": "fp32",
                "width": 1024,
                "height": 1024,
                "megapixels": 1.048576,
                "seconds": 2.0,
                "mpix_per_s": 0.524288,
                "peak_rss_mb": 321.0,
                "load_s": 0.2,
                "status": "ok",
            }
        ],
        "figures": {},
    }


def test_markdown_and_html_writers_show_the_same_cells_and_escape_reasons():
    from semphase.benchmarks.report_html import render_html
    from semphase.benchmarks.report_md import render_markdown

    report = _tiny_report()
    md = render_markdown(report)
    assert "| FP32 | 0.5000 | 0.6000 | 0.7000 | +0.0000 | 100.000% | - | - | ok |" in md
    assert "| FP16 | - | - | - | - | - | - | - | failed: bad \\| <script>x</script> |" in md
    assert "| FP32 | 1024 x 1024 | 1.0 | 2.00 | 0.524 | 321 | 0.20 | - | ok |" in md
    assert (
        "| FP32 | 1 | 1 | 512 x 512 | 12.3 | 15.0 | 12.3 | 81.00 | - | ok |" in md
    )  # a report without streams: 1
    assert "amx_int8 unknown" in md  # None is unknown, never "no"
    page = render_html(report, ".")
    assert "<script>" not in page and "bad | &lt;script&gt;x&lt;/script&gt;" in page
    assert '<td class="text failed">failed: bad' in page
    assert '<td class="num">0.5000</td>' in page and "http" not in page


def test_the_child_records_the_tiling_it_ran(tmp_path, capsys):
    # A 32-pixel tile on a model recommending an overlap of 32 runs with 16 (at most half a tile); the child
    # once recorded the model's 32 beside the measured seconds.
    from _runtime_models import build_blur_classifier, micrograph
    from semphase.benchmarks.child import main
    from semphase.imageio import write_image

    model = build_blur_classifier(tmp_path / "m.onnx", tile=128, overlap=32)
    write_image(tmp_path / "a.png", micrograph(64, 80, seed=1))
    assert main([str(model), str(tmp_path / "a.png"), "--tile", "32", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["tile"], report["overlap"]) == (32, 16)
    assert main([str(model), str(tmp_path / "a.png"), "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["tile"], report["overlap"]) == (128, 32)


def test_latency_runs_one_call_per_stream_at_once_and_counts_every_streams_tiles():
    import threading

    from semphase.benchmarks.speed import measure_latency

    class TwoStreams:
        tile_size, streams = 64, 2
        barrier = threading.Barrier(2, timeout=5)  # broken when the calls of a run come one at a time

        def logits(self, batch):
            self.barrier.wait()
            return np.zeros((len(batch), 5, 64, 64), np.float32)

    (row,) = measure_latency(TwoStreams(), "INT8", [3], warmup=1, repeat=3)
    assert row["status"] == "ok", row["reason"]
    assert row["streams"] == 2 and row["per_tile_ms"] == pytest.approx(row["median_ms"] / 6)
