"""The app's --conf options: defaults, checks, and the launcher's one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from monailabel_app.lib.settings import AppSettings, SettingsError
from monailabel_app.serve import main as serve


def test_defaults_serve_the_bundled_model_on_the_cpu(tmp_path):
    settings = AppSettings.from_conf({}, tmp_path)
    assert (settings.weights, settings.torch_device, settings.precision, settings.mode) == ("default", "cpu", "fp32", "full")
    assert settings.models_dir == Path(tmp_path) / "model" and settings.threshold is None and settings.batch_size == 8


def test_values_are_parsed(tmp_path):
    settings = AppSettings.from_conf({"threshold": "0.3", "batch_size": "4", "mode": "fast", "models_dir": str(tmp_path / "m"),
                                      "weights": str(tmp_path), "device": "auto"}, tmp_path)
    assert (settings.threshold, settings.batch_size, settings.mode) == (0.3, 4, "fast")
    assert settings.weights == str(tmp_path) and settings.torch_device in ("cpu", "cuda")


@pytest.mark.parametrize("conf,message", [
    ({"precision": "fp8"}, "precision 'fp8'"), ({"device": "tpu"}, "device 'tpu'"), ({"mode": "turbo"}, "mode 'turbo'"),
    ({"threshold": "2"}, "between 0 and 1"), ({"batch_size": "many"}, "expected an integer"),
    ({"weights": "/no/such/model"}, "weights '/no/such/model'"), ({"colour": "blue"}, "unknown --conf option(s) colour"),
])
def test_bad_options_name_themselves(tmp_path, conf, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AppSettings.from_conf(conf, tmp_path)


def test_security_options_are_parsed_and_checked(tmp_path):
    settings = AppSettings.from_conf({"enable": "logs, sessions", "max_upload_mb": "5",
                                      "image_folders": f"{tmp_path}:{tmp_path}"}, tmp_path)
    assert settings.enable == {"logs", "sessions"} and settings.max_upload_mb == 5
    assert settings.image_folders == (tmp_path.resolve(),) * 2
    assert AppSettings.from_conf({}, tmp_path).enable == frozenset()
    with pytest.raises(SettingsError, match="unknown endpoint group"):
        AppSettings.from_conf({"enable": "everything"}, tmp_path)
    with pytest.raises(SettingsError, match="no such folder"):
        AppSettings.from_conf({"image_folders": str(tmp_path / "missing")}, tmp_path)


def test_the_launcher_refuses_bad_options_and_folders_in_one_line(tmp_path, capsys):
    assert serve(["--studies", str(tmp_path), "--conf", "precision", "fp8"]) == 2
    assert serve(["--studies", str(tmp_path / "missing")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == ["monailabel_app.serve: error: --conf precision 'fp8': choose fp32, bf16, fp16",
                      f"monailabel_app.serve: error: --studies {tmp_path / 'missing'}: no such folder (or give a DICOMweb URL)"]
