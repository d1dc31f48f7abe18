import json
import subprocess
import sys

import pytest

from src.utils.errors import UserError
from src.utils.settings import REPO_ROOT, REQUIRED_KEYS, load_settings, register_omegaconf_resolver, setting


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "parse_settings_json.py"), *args], capture_output=True, text=True, cwd=cwd
    )


def test_settings_file_has_the_four_keys_under_data_and_logs():
    data = load_settings()
    assert set(REQUIRED_KEYS) <= set(data)
    for key in REQUIRED_KEYS:
        assert data[key].split("/")[0] in ("data", "logs")


def test_relative_values_resolve_against_repo_root():
    assert setting("RAW_DATA_DIR") == REPO_ROOT / "data" / "blood-vessel-segmentation"


def test_cli_prints_absolute_path_from_any_directory(tmp_path):
    out = run_cli("LOGS_DIR", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.strip() == str(REPO_ROOT / "logs")


def test_cli_unknown_key_is_one_line_exit_2(tmp_path):
    out = run_cli("NOPE", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "unknown settings key 'NOPE'" in out.stderr


def test_cli_unreadable_json_is_one_line_exit_2(tmp_path):
    broken = tmp_path / "SETTINGS.json"
    broken.write_text("{ not json")
    out = run_cli("RAW_DATA_DIR", "--settings", str(broken))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not valid JSON" in out.stderr


def test_absolute_values_are_kept(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"RAW_DATA_DIR": "/abs/data"}))
    assert str(setting("RAW_DATA_DIR", f)) == "/abs/data"
    with pytest.raises(UserError):
        setting("LOGS_DIR", f)


def test_hydra_paths_config_reads_settings():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    register_omegaconf_resolver()
    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("paths/default")
    paths = OmegaConf.to_container(cfg, resolve=True)["paths"]
    assert paths["data_dir"] == str(setting("RAW_DATA_DIR"))
    assert paths["log_dir"] == str(setting("LOGS_DIR"))
    assert paths["submission_dir"] == str(setting("SUBMISSION_DIR"))
