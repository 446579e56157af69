"""8-bit and 4-bit weights: without a CUDA GPU (or without bitsandbytes) the request fails
with one line before any weight is read."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from medisee.cli import main
from medisee.quantize import require_quantisation


@pytest.mark.parametrize("precision", ["8bit", "4bit"])
def test_quantised_precision_on_a_cpu_is_one_clear_line(tmp_path, capsys, monkeypatch, precision):
    monkeypatch.setattr("medisee.models.load_checkpoint", lambda *a, **k: pytest.fail("weights were read"))
    image = tmp_path / "slice.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    code = main(["predict", "--model", str(tmp_path), "--image", str(image), "--query", "where is the liver?",
                 "--precision", precision, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"--precision {precision} needs a CUDA GPU" in err and "use --precision bfloat16 or float32" in err


def test_without_bitsandbytes_the_install_line_is_given(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(ValueError, match=r"needs bitsandbytes, which is not installed: pip install bitsandbytes==0\.50\.2"):
        require_quantisation("4bit", "cuda")
