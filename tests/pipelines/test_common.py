"""The pipelines' reuse of finished training runs: reused only when trained with the settings asked for."""

from pathlib import Path

import yaml

from src.pipelines import common
from src.pipelines.common import changed_settings
from src.utils.entry import compose_config, resolved_config

DEMO_3D = ["recipe=pseudo_3d", "experiment=demo3d", "data.fold=0"]


def finished_run(run_dir: Path, overrides: list[str]) -> Path:
    """A run folder as ``src.train`` leaves it: the resolved config.yaml and metrics.json."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved_config(compose_config("train", overrides, run_dir))))
    (run_dir / "metrics.json").write_text("{}")
    return run_dir


def test_a_finished_run_differs_only_where_its_settings_do(tmp_path):
    data = f"paths.data_dir={tmp_path / 'data'}"
    run_dir = finished_run(tmp_path / "run", [*DEMO_3D, data, "trainer.max_epochs=6", "model.scheduler.T_max=200"])
    assert changed_settings(run_dir, [*DEMO_3D, data, "trainer.max_epochs=6", "model.scheduler.T_max=200"]) == []
    assert changed_settings(run_dir, [*DEMO_3D, data]) == ["model.scheduler.T_max: 200 -> 420", "trainer.max_epochs: 6 -> 21"]
    assert changed_settings(run_dir, [*DEMO_3D, f"paths.data_dir={tmp_path / 'other'}", "trainer.max_epochs=6",
                                      "model.scheduler.T_max=200"]) == [f"data.data_dir: {tmp_path / 'data'} -> {tmp_path / 'other'}"]
    (run_dir / "config.yaml").unlink()
    assert changed_settings(run_dir, [*DEMO_3D, data]) == []  # nothing saved to compare: reused as before


def test_ensure_run_reuses_a_matching_run_and_retrains_one_of_other_settings(tmp_path, monkeypatch, capsys):
    data = f"paths.data_dir={tmp_path / 'data'}"
    run_dir = finished_run(tmp_path / "run", [*DEMO_3D, data])
    commands = []
    monkeypatch.setattr(common, "run", commands.append)
    common.ensure_run(run_dir, [*DEMO_3D, data], 0.0)
    assert commands == [] and "reused the finished run" in capsys.readouterr().out
    common.ensure_run(run_dir, [*DEMO_3D, data, "trainer.max_epochs=6"], 0.0)
    assert len(commands) == 1 and "trainer.max_epochs=6" in commands[0] and not run_dir.exists()
    assert "trained with other settings (trainer.max_epochs: 21 -> 6): training again" in capsys.readouterr().out
