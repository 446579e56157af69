"""A real DeepSpeed run (CPU, gloo, ZeRO-2) on a tiny dataset: the loss falls, a killed run
resumes from its last checkpoint, and the trained model loads for prediction."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medisee.data.mlmr import write_mlmr_jsonl
from medisee.data.records import Record
from medisee.weights import extend_checkpoint, load_checkpoint


def make_dataset(root: Path, count: int = 6) -> Path:
    """Bright ellipses ("kidney") at varying places; every other record asks for an absent spleen."""
    rng = np.random.default_rng(0)
    records = []
    yy, xx = np.mgrid[:64, :64]
    for i in range(count):
        cx, cy = 20 + 4 * i, 24 + 2 * i
        mask = ((xx - cx) / 10) ** 2 + ((yy - cy) / 7) ** 2 <= 1
        image = np.clip(40 + 10 * rng.standard_normal((64, 64)) + 150 * mask, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / f"img{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / f"mask{i}.png")
        ys, xs = np.nonzero(mask)
        bbox = (xs.min() / 64, ys.min() / 64, (xs.max() + 1) / 64, (ys.max() + 1) / 64)
        records.append(Record(root / f"img{i}.png", root / f"mask{i}.png", "left kidney",
                              "Which organ here filters the blood and could hold a stone?", "Which organ filters blood?",
                              bbox, "The kidney filters blood into urine."))
        if i % 2:
            records.append(Record(root / f"img{i}.png", None, "spleen", "Where is the organ that recycles red cells?",
                                  "Where is the spleen-like organ?", None, "It lies in the left upper abdomen.", absent=True))
    write_mlmr_jsonl(records, root / "train.jsonl")
    return root / "train.jsonl"


def write_config(root: Path, data: Path, steps: int, save_every: int, phase: str = "pretrain") -> Path:
    config = root / "train.yaml"
    config.write_text(
        f"init: preset:tiny\nphase: {phase}\ntrain: {data}\nval: {data}\nval_limit: 4\n"
        f"output_dir: {root / 'run'}\nsteps: {steps}\nbatch_size: 2\nlr: 2.0e-3\nwarmup_steps: 2\n"
        f"save_every: {save_every}\nlog_every: 1\nseed: 0\n"
    )
    return config


def start(config: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("medisee")
    return subprocess.Popen([str(exe), "train", "--config", str(config), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"PYTHONWARNINGS": "ignore"})


def steps_logged(run: Path) -> list[int]:
    log = run / "log.jsonl"
    return [json.loads(line)["step"] for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
def test_training_lowers_the_loss_and_resumes_after_being_killed(tmp_path):
    data = make_dataset(tmp_path)
    config = write_config(tmp_path, data, steps=24, save_every=6)
    run = tmp_path / "run"
    proc = start(config)
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        state = run / "checkpoints" / "state.json"
        if state.exists() and json.loads(state.read_text())["step"] >= 6 and len(steps_logged(run)) >= 8:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    saved = json.loads((run / "checkpoints" / "state.json").read_text())["step"]
    before = steps_logged(run)
    assert saved >= 6 and len(before) >= saved

    proc = start(config)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert f"resuming from step{saved:07d}" in output
    after = steps_logged(run)[len(before):]
    assert after == list(range(saved + 1, 25))  # continues right after the last checkpoint
    assert json.loads((run / "checkpoints" / "state.json").read_text())["step"] == 24
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    first = np.mean([e["total"] for e in entries[:4]])
    last = np.mean([e["total"] for e in entries[-4:]])
    assert last < 0.7 * first, (first, last)
    assert {"ce", "bce", "dice", "l1", "giou", "total", "lr"} <= set(entries[-1])
    assert (run / "eval" / "metrics.json").exists()
    model = load_checkpoint(run / "model")
    assert json.loads((run / "model" / "medisee.json").read_text())["step"] == 24
    assert model.config.name == "tiny"
    assert len([p for p in (run / "checkpoints").iterdir() if p.name.startswith("step")]) <= 2


@pytest.mark.slow
def test_segmentation_phase_trains_only_the_mask_head(tmp_path):
    data = make_dataset(tmp_path)
    proc = start(write_config(tmp_path, data, steps=3, save_every=3, phase="segmentation"))
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    entries = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [1, 2, 3] and {"bce", "dice", "total"} <= set(entries[0])
    assert "ce" not in entries[0]
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def run_phase_on_checkpoint(tmp_path, phase: str, model_changes: str, sources: str | None = None):
    """Three steps of ``phase`` from a saved random tiny model extended by ``model_changes``
    (on ``sources``, a YAML list of data sources, instead of the plain dataset when given);
    returns the config, its text without the changes, and the names of the weights that changed."""
    from medisee.builder import build_random
    from medisee.weights import save_checkpoint

    data = make_dataset(tmp_path)
    save_checkpoint(build_random("tiny", seed=0), tmp_path / "base")
    config = write_config(tmp_path, data, steps=3, save_every=3, phase=phase)
    text = config.read_text().replace("init: preset:tiny", f"init: checkpoint:{tmp_path / 'base'}")
    if sources is not None:
        text = text.replace(f"train: {data}\n", "train: " + sources.format(data=data) + "\n")
    config.write_text(text + f"model_changes: {model_changes}\n")
    proc = start(config)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    base = load_checkpoint(tmp_path / "base").model.state_dict()
    trained = load_checkpoint(tmp_path / "run" / "model").model.state_dict()
    changed = {k for k, v in trained.items() if k not in base or not np.array_equal(v.numpy(), base[k].numpy())}
    return config, text, changed


def refused_output(config: Path, tmp_path: Path) -> str:
    """Run ``config`` again (the first run's folder moved aside) and return its output,
    after checking that it stopped with an error and without a traceback."""
    (tmp_path / "run").rename(tmp_path / "first")
    proc = start(config)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "Traceback" not in output, output
    return output


@pytest.mark.slow
def test_patches_phase_trains_only_the_patch_head(tmp_path):
    config, text, changed = run_phase_on_checkpoint(tmp_path, "patches", "{patch_classes: [left kidney, spleen]}")
    entries = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [1, 2, 3] and set(entries[0]) >= {"patch", "total"} and "ce" not in entries[0]
    assert changed and all(k.startswith("patch_head.") for k in changed)

    config.write_text(text)  # no patch head to train: a clear error, not a traceback
    assert "phase patches needs a model with patch_classes" in refused_output(config, tmp_path)


@pytest.mark.slow
def test_queries_phase_trains_only_the_query_head_from_ordinary_requests_without_images(tmp_path):
    sources = "[{{path: {data}, kind: requests, noise: 0.5}}, {{path: {data}, kind: mlmr, noise: 0.3}}]"
    config, text, changed = run_phase_on_checkpoint(
        tmp_path, "queries", "{patch_classes: [left kidney, spleen], query_tags: true}", sources)
    entries = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == [1, 2, 3] and set(entries[0]) == {"query", "total", "step", "lr", "seconds"}
    assert all(k.startswith(("query_head.", "patch_head.")) for k in changed)  # both new; only one trained
    fresh = extend_checkpoint(tmp_path / "base", {"patch_classes": ["left kidney", "spleen"], "query_tags": True})
    trained = load_checkpoint(tmp_path / "run" / "model").model.state_dict()
    moved = {k for k, v in fresh.model.state_dict().items() if not np.array_equal(v.numpy(), trained[k].numpy())}
    assert moved and all(k.startswith("query_head.") for k in moved)

    config.write_text(text)  # no query head to train: a clear error, not a traceback
    assert "phase queries needs a model with query tags" in refused_output(config, tmp_path)


@pytest.mark.slow
def test_masks_phase_trains_only_the_mask_decoder_and_its_new_fine_stem(tmp_path):
    _, _, changed = run_phase_on_checkpoint(tmp_path, "masks", "{sam: {fine_features: true}}")
    assert any(k.startswith("mask_head.fine_stem.") for k in changed)
    assert any(k.startswith("mask_head.sam.mask_decoder.") for k in changed)
    assert all(k.startswith(("mask_head.fine_stem.", "mask_head.sam.mask_decoder.")) for k in changed)


@pytest.mark.slow
def test_a_frozen_image_encoder_stays_as_it_was_and_its_embeddings_are_remembered(tmp_path):
    config, text, changed = run_phase_on_checkpoint(tmp_path, "pretrain", "{}\nfreeze: [mask_head.sam.vision_encoder.]")
    assert any(k.startswith("mllm.") for k in changed) and any(k.startswith("mask_head.sam.mask_decoder.") for k in changed)
    assert not any(k.startswith("mask_head.sam.vision_encoder.") for k in changed)
    recorded = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert recorded["freeze"] == ["mask_head.sam.vision_encoder."]

    config.write_text(text + "freeze: [mask_head.sam.vision_encodr.]\n")  # a typo: refused, not ignored
    assert "freeze: no parameters under ['mask_head.sam.vision_encodr.']" in refused_output(config, tmp_path)


@pytest.mark.slow
def test_one_process_trains_twice(tmp_path):
    """``build_default`` runs its stages one after another in one process: the second run
    must not trip over the first one's torn-down DeepSpeed groups."""
    from training.config import load_config
    from training.train import run

    data = make_dataset(tmp_path)
    config = write_config(tmp_path, data, steps=2, save_every=2, phase="segmentation")
    first = run(load_config(config), show_progress=False)
    second = run(load_config(config, {"output_dir": str(tmp_path / "again")}), show_progress=False)
    assert first.step == second.step == 2 and (tmp_path / "again" / "model" / "model.safetensors").exists()
