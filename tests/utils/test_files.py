import os
import subprocess
import sys

import pytest

from src.utils.files import atomic_output, sweep_stale, write_text_atomic


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_file_appears_only_when_complete(tmp_path):
    out = tmp_path / "sub" / "a.txt"
    with atomic_output(out) as tmp:
        tmp.write_text("new")
        assert not out.exists() and tmp.parent == out.parent and ".tmp-" in tmp.name
    assert out.read_text() == "new"
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.txt"]


def test_a_failed_block_leaves_the_previous_output_and_no_temporary(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_keep_suffix_keeps_the_extension_for_format_sniffing_writers(tmp_path):
    with atomic_output(tmp_path / "0001.png", keep_suffix=True) as tmp:
        assert tmp.suffix == ".png" and tmp.name.startswith("0001.tmp-")
        tmp.write_bytes(b"x")
    assert (tmp_path / "0001.png").read_bytes() == b"x"


def test_a_folder_is_replaced_only_through_the_hook(tmp_path):
    out = tmp_path / "views"
    out.mkdir()
    (out / "mine.txt").write_text("user's")
    with pytest.raises(FileExistsError), atomic_output(out) as tmp:
        tmp.mkdir()
    assert (out / "mine.txt").read_text() == "user's"
    with atomic_output(out, on_existing=lambda p: [f.unlink() for f in p.iterdir()] and p.rmdir()) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("ours")
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_a_refusing_hook_keeps_the_finished_temporary(tmp_path):
    out = tmp_path / "phantom"
    out.mkdir()

    def refuse(path):
        raise ValueError(f"{path} is not ours")

    with pytest.raises(ValueError), atomic_output(out, on_existing=refuse) as tmp:
        tmp.mkdir()
        (tmp / "volume.npy").write_text("hours of work")
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("phantom.tmp-")]
    assert len(kept) == 1 and (kept[0] / "volume.npy").read_text() == "hours of work"


def test_sweep_removes_only_temporaries_of_dead_processes(tmp_path):
    out = tmp_path / "raw"
    gone, alive = dead_pid(), os.getppid()
    stale_dir, stale_file = tmp_path / f"raw.tmp-{gone}-abc123", tmp_path / f"raw.tmp-{gone}"
    live, other = tmp_path / f"raw.tmp-{alive}-abc123", tmp_path / f"rawer.tmp-{gone}"
    stale_dir.mkdir()
    for p in (stale_file, live, other):
        p.write_text("")
    assert sorted(sweep_stale(out)) == sorted([stale_dir, stale_file])
    assert live.exists() and other.exists() and not stale_dir.exists()


def test_sweep_with_a_marker_spares_folders_without_it(tmp_path):
    gone = dead_pid()
    marked, foreign = tmp_path / f"raw.tmp-{gone}", tmp_path / f"raw.tmp-{gone}-0f"
    for p in (marked, foreign):
        p.mkdir()
    (marked / ".building").write_text("")
    assert sweep_stale(tmp_path / "raw", require=".building") == [marked]
    assert foreign.exists()


def test_sweep_matches_kept_suffix_temporaries(tmp_path):
    gone = dead_pid()
    stale = tmp_path / f"0001.tmp-{gone}-0a0b0c.png"
    stale.write_bytes(b"")
    assert sweep_stale(tmp_path / "0001.png") == [stale]


def test_write_text_atomic(tmp_path):
    write_text_atomic(tmp_path / "progress", "12")
    write_text_atomic(tmp_path / "progress", "24")
    assert (tmp_path / "progress").read_text() == "24" and len(list(tmp_path.iterdir())) == 1
