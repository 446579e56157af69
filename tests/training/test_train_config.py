from pathlib import Path

import pytest
import yaml

from medisee.data import catalogue
from training.config import DataSource, TrainConfig, load_config
from training.train import deepspeed_config


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_paths_resolve_against_the_config_folder_and_defaults_follow_the_paper(tmp_path):
    config = load_config(write(tmp_path, "train: data/train.jsonl\noutput_dir: runs/x\ninit: checkpoint:models/m\n"))
    assert config.train[0].path == tmp_path / "data" / "train.jsonl" and config.train[0].kind == "mlmr"
    assert config.output_dir == tmp_path / "runs" / "x"
    assert config.init == f"checkpoint:{tmp_path / 'models' / 'm'}"
    assert (config.lr, config.betas, config.weight_decay, config.warmup_steps, config.zero_stage) == (3e-4, (0.9, 0.95), 0.0, 100, 2)
    ds = deepspeed_config(config, cpu=True)
    assert ds["scheduler"]["type"] == "WarmupDecayLR" and ds["scheduler"]["params"]["warmup_num_steps"] == 100
    assert ds["optimizer"]["type"] == "AdamW" and ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"]["stage"] == 2


def test_mixed_sources_keep_their_weights(tmp_path):
    config = load_config(write(tmp_path, "train:\n  - {path: sa.json, kind: samed2d, weight: 7}\n  - {path: r.jsonl, weight: 3}\n"))
    assert [(s.kind, s.weight) for s in config.train] == [("samed2d", 7.0), ("mlmr", 3.0)]


def _three_records(tmp_path):
    """One present CT target and two absent MR ones, written as d.jsonl."""
    from medisee.data.mlmr import write_mlmr_jsonl
    from medisee.data.records import Record

    import numpy as np
    from PIL import Image

    image, mask = tmp_path / "i.png", tmp_path / "m.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)
    records = [Record(image=image, mask=None if absent else mask, class_text="liver", long="q", short="q",
                      bbox=None if absent else (0.0, 0.0, 1.0, 1.0), absent=absent,
                      extra={"modality": "MR" if absent else "CT"}) for absent in (False, True, True)]
    write_mlmr_jsonl(records, tmp_path / "d.jsonl")


def test_a_source_can_keep_only_absent_records(tmp_path):
    from training.train import read_sources

    _three_records(tmp_path)
    config = load_config(write(tmp_path, "train:\n  - {path: d.jsonl}\n  - {path: d.jsonl, weight: 0.5, only: absent}\n"))
    sources = read_sources(config)
    counts = {name: (len(found), weight) for name, (found, weight) in sources.items()}
    assert counts == {"0:d.jsonl": (3, 1.0), "1:d.jsonl:absent": (2, 0.5)}


def test_a_source_can_keep_one_modality(tmp_path):
    from training.train import read_sources

    _three_records(tmp_path)
    config = load_config(write(tmp_path, "train:\n  - {path: d.jsonl}\n  - {path: d.jsonl, weight: 1.5, modality: CT}\n"))
    sources = read_sources(config)
    kept = {name: [r.extra["modality"] for r in found] for name, (found, _) in sources.items()}
    assert kept == {"0:d.jsonl": ["CT", "MR", "MR"], "1:d.jsonl:CT": ["CT"]}
    with pytest.raises(ValueError, match="no PET records"):
        read_sources(load_config(write(tmp_path, "train: [{path: d.jsonl, modality: PET}]\n")))


def test_request_sources_ask_as_people_do_and_noise_marks_every_record(tmp_path):
    from training.train import read_sources

    _three_records(tmp_path)
    config = load_config(write(tmp_path, "train:\n  - {path: d.jsonl, noise: 0.3}\n  - {path: d.jsonl, kind: requests}\n"))
    sources = read_sources(config)
    assert set(sources) == {"0:d.jsonl:noise0.3", "1:d.jsonl:requests"}
    plain, requests = (records for records, _ in sources.values())
    assert all(r.extra["noise"] == 0.3 for r in plain)
    assert requests and all("asked" in r.extra and "noise" not in r.extra for r in requests)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: a.jsonl\nlearning_rate: 1\n", "unknown settings"),
        ("train: a.jsonl\nphase: dream\n", "phase must be one of"),
        ("train: a.jsonl\nzero_stage: 3\n", "zero_stage must be 0, 1 or 2"),
        ("train: []\n", "at least one training data source"),
        ("train: [{path: a, kind: csv}]\n", "data kind must be"),
        ("train: [{path: a, only: missing}]\n", "'only' must be absent or present"),
        ("train: [{path: a, pairs: 3}]\n", "'pairs' applies to kind mimo only"),
        ("train: [{path: a, kind: mimo, pairs: 0}]\n", "must be at least 1"),
        ("train: [{path: a, noise: 1.5}]\n", "'noise' is a share of queries"),
        ("train: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="training config not found"):
        load_config(tmp_path / "nope.yaml")


def test_model_changes_need_a_checkpoint_init(tmp_path):
    train = [DataSource(path=tmp_path / "train.jsonl")]
    changes = {"visual_prompts": {"max_points": 1}}
    for init in ("preset:tiny", "default"):
        with pytest.raises(ValueError, match="checkpoint"):
            TrainConfig(output_dir=tmp_path, train=train, init=init, model_changes=changes)
    config = TrainConfig(output_dir=tmp_path, train=train, init=f"checkpoint:{tmp_path}", model_changes=changes)
    assert config.model_changes == changes


def test_load_config_accepts_mimo_sources_and_model_changes(tmp_path):
    (tmp_path / "run.yaml").write_text(
        "output_dir: out\n"
        "init: checkpoint:ckpt/medisee\n"
        "train:\n"
        "  - {path: data/mimo.jsonl, kind: mimo, weight: 2}\n"
        "  - data/mlmr.jsonl\n"
        "model_changes:\n"
        "  visual_prompts: {max_points: 1, aligner: false}\n"
    )
    config = load_config(tmp_path / "run.yaml")
    assert [s.kind for s in config.train] == ["mimo", "mlmr"]
    assert config.train[0].path == (tmp_path / "data" / "mimo.jsonl").resolve() and config.train[0].weight == 2.0
    assert config.init == "checkpoint:" + str((tmp_path / "ckpt" / "medisee").resolve())
    assert config.model_changes == {"visual_prompts": {"max_points": 1, "aligner": False}}
    (tmp_path / "bad.yaml").write_text("train:\n  - {path: data/x.jsonl, kind: mimoseg}\n")
    with pytest.raises(ValueError, match="mlmr, samed2d, mimo or requests"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "preset.yaml").write_text("train: data/x.jsonl\nmodel_changes: {visual_prompts: {max_points: 1}}\n")
    with pytest.raises(ValueError, match="checkpoint"):
        load_config(tmp_path / "preset.yaml")
    (tmp_path / "views.yaml").write_text("train:\n  - {path: d.jsonl, kind: mimo, perspectives: [I, IV]}\n")
    assert load_config(tmp_path / "views.yaml").train[0].perspectives == ("I", "IV")
    for line, message in (("{path: d.jsonl, kind: mimo, perspectives: [V]}", "unknown perspectives"),
                          ("{path: d.jsonl, kind: mlmr, perspectives: [I]}", "kind mimo only")):
        (tmp_path / "bad-views.yaml").write_text(f"train:\n  - {line}\n")
        with pytest.raises(ValueError, match=message):
            load_config(tmp_path / "bad-views.yaml")


def test_freeze_takes_one_prefix_or_a_list(tmp_path):
    (tmp_path / "one.yaml").write_text("train: d.jsonl\nfreeze: mask_head.sam.vision_encoder.\n")
    assert load_config(tmp_path / "one.yaml").freeze == ("mask_head.sam.vision_encoder.",)
    (tmp_path / "two.yaml").write_text("train: d.jsonl\nfreeze: [mllm.vision_tower., mllm.mm_projector.]\n")
    assert load_config(tmp_path / "two.yaml").freeze == ("mllm.vision_tower.", "mllm.mm_projector.")
    assert load_config(tmp_path / "one.yaml", {"freeze": []}).freeze == ()


def test_build_default_puts_every_stage_path_under_its_runs_folder(tmp_path):
    from training.build_default import STAGES, stage_config

    for stage in STAGES:
        config = stage_config(stage, tmp_path)
        paths = [config.output_dir, *(s.path for s in config.train)] + ([config.val] if config.val else [])
        if config.init.startswith("checkpoint:"):
            paths.append(Path(config.init.split(":", 1)[1]))
        assert all(path.is_relative_to(tmp_path.resolve()) for path in paths), (stage, paths)
    assert stage_config(STAGES[-1], tmp_path).init == f"checkpoint:{tmp_path.resolve() / 'tiny-5c-queries' / 'model'}"


def test_patch_classes_catalogue_means_every_catalogue_structure_in_name_order(tmp_path):
    text = "init: checkpoint:m\ntrain: t.jsonl\nmodel_changes: {patch_classes: catalogue, visual_tags: true}\n"
    changes = load_config(write(tmp_path, text)).model_changes
    assert changes == {"patch_classes": sorted(catalogue.names()), "visual_tags": True}
    configs = Path(__file__).resolve().parents[2] / "training" / "configs"
    for path in sorted(configs.glob("*.yaml")):  # the shipped configs never list structures themselves
        changes = yaml.safe_load(path.read_text(encoding="utf-8")).get("model_changes") or {}
        assert changes.get("patch_classes", "catalogue") == "catalogue", path.name
