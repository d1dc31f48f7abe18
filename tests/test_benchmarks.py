"""The inference benchmarks run and report the keys the README and issue goals quote (no timing asserted)."""

from benchmarks.inference import overlap, plumbing


def test_plumbing_reports_engine_and_monai_throughput(capsys):
    result = plumbing((6, 96, 80), roi=64, sw_batch=4, slices=2)
    assert {"mvox_s", "monai_mvox_s", "ratio", "z_mvox_s", "xz_mvox_s", "zy_mvox_s"} <= set(result)
    assert result["mvox_s"] > 0 and result["monai_mvox_s"] > 0
    assert "MONAI sliding_window_inference alone" in capsys.readouterr().out


def test_overlap_reports_wall_device_and_host_time():
    result = overlap((4, 96, 80), roi=64, device_ms=1.0, sw_batch=4, slices=2, block_mb=1)
    assert {"wall_s", "device_s", "host_s", "serial_s"} <= set(result)
    assert result["device_s"] >= 4 * 4 * 0.001  # at least 4 windows per slice, 1 ms each
