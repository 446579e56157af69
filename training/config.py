"""Training run configuration, read from a YAML (or JSON) file.

Paths in the file are relative to the file's folder. Defaults follow the paper (section
5.1): AdamW lr 3e-4, betas (0.9, 0.95), no weight decay, WarmupDecayLR with 100 warm-up
steps, gradient clipping 1.0, ZeRO stage 2, SA-Med2D : reasoning data = 7 : 3.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from medisee.data import catalogue
from medisee.data.mimo import PERSPECTIVES

PHASES = ("segmentation", "patches", "queries", "masks", "pretrain", "end_to_end", "finetune")


@dataclass
class DataSource:
    path: Path
    kind: str = "mlmr"  # "mlmr" (jsonl), "samed2d" (json map), "mimo" (a jsonl's targets as MIMOSeg perspectives
    #                     I-IV) or "requests" (a jsonl's targets asked as people ask: medisee.data.requests)
    weight: float = 1.0  # sampling ratio against the other sources
    only: str | None = None  # "absent" or "present": keep only those records (to oversample one kind)
    perspectives: tuple[str, ...] | None = None  # kind mimo: keep only these MIMOSeg perspectives (I, II, III, IV)
    modality: str | None = None  # keep only records of this modality ("CT", "MR"), e.g. to oversample one
    pairs: int = 1  # kind mimo: perspective I requests for random pairs of an image's targets (3+ targets)
    noise: float = 0.0  # share of this source's queries given typed-text noise when drawn (medisee.data.noise)


@dataclass
class TrainConfig:
    output_dir: Path
    train: list[DataSource]
    init: str = "preset:tiny"  # "preset:NAME", "checkpoint:PATH" or "default"
    phase: str = "end_to_end"  # segmentation: box-prompted mask head only; patches: the patch head only;
    #                            queries: the query head only, from the questions alone (no image);
    #                            masks: the mask decoder (and its fine stem) only, from the full loss;
    #                            pretrain: everything trains (tiny only); end_to_end: eq. 4; finetune: + similarity loss
    val: Path | None = None
    val_limit: int = 64  # validation records evaluated at each eval
    steps: int = 1000
    batch_size: int = 4
    grad_accumulation: int = 1
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    zero_stage: int = 2
    precision: str = "fp32"  # fp32 or bf16
    save_every: int = 200
    eval_every: int = 0  # 0: evaluate only at the end
    log_every: int = 10
    seed: int = 0
    query_kind: str = "any"  # short, long or any
    train_tokenizer: bool = False  # tiny from scratch: fit the BPE tokenizer to the data first
    keep_checkpoints: int = 2
    gt_box_prompts: float = 0.0  # fraction of targets whose mask is prompted with the true box
    box_jitter: float = 0.1  # segmentation phase: prompt boxes move by up to this fraction of their size
    loss_weights: dict | None = None  # overrides of the model's LossWeights for this run
    model_changes: dict | None = None  # config keys added to a checkpoint init (e.g. visual_prompts); new modules start fresh;
    #                                    patch_classes: catalogue means every catalogue structure, in name order
    freeze: tuple[str, ...] = ()  # parameter-name prefixes kept frozen whatever the phase trains

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {self.phase!r}")
        if self.zero_stage not in (0, 1, 2):
            raise ValueError("zero_stage must be 0, 1 or 2 (stage 3 partitions parameters, and the MediSee "
                             "loss calls submodules directly)")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError("precision must be fp32 or bf16")
        if self.steps <= 0 or self.batch_size <= 0 or self.grad_accumulation <= 0:
            raise ValueError("steps, batch_size and grad_accumulation must be positive")
        if not self.train:
            raise ValueError("at least one training data source is needed")
        if self.model_changes and not self.init.startswith("checkpoint:"):
            raise ValueError("model_changes extend a checkpoint: use them with init: checkpoint:PATH")


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Read a config file; relative paths resolve against its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    raw.update(overrides or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    base = path.parent
    resolve = lambda p: (base / p).resolve() if p is not None else None  # noqa: E731
    sources = raw.get("train") or []
    if isinstance(sources, (str, dict)):
        sources = [sources]
    raw["train"] = [
        DataSource(path=resolve(s), kind="mlmr") if isinstance(s, str)
        else DataSource(path=resolve(s["path"]), kind=s.get("kind", "mlmr"), weight=float(s.get("weight", 1.0)),
                        only=s.get("only"), perspectives=tuple(s["perspectives"]) if s.get("perspectives") else None,
                        modality=s.get("modality"), pairs=int(s.get("pairs", 1)), noise=float(s.get("noise", 0.0)))
        for s in sources
    ]
    raw["output_dir"] = resolve(raw.get("output_dir", "runs/medisee"))
    raw["val"] = resolve(raw.get("val"))
    if "betas" in raw:
        raw["betas"] = tuple(raw["betas"])
    if "freeze" in raw:
        if isinstance(raw["freeze"], str):
            raw["freeze"] = [raw["freeze"]]
        raw["freeze"] = tuple(raw["freeze"])
    if isinstance(raw.get("model_changes"), dict) and raw["model_changes"].get("patch_classes") == "catalogue":
        raw["model_changes"] = {**raw["model_changes"], "patch_classes": sorted(catalogue.names())}
    init = raw.get("init", "preset:tiny")
    if isinstance(init, str) and init.startswith("checkpoint:"):
        raw["init"] = "checkpoint:" + str(resolve(init[len("checkpoint:"):]))
    for source in raw["train"]:
        if source.kind not in ("mlmr", "samed2d", "mimo", "requests"):
            raise ValueError(f"{path}: data kind must be mlmr, samed2d, mimo or requests, got {source.kind!r}")
        if not 0.0 <= source.noise <= 1.0:
            raise ValueError(f"{path}: 'noise' is a share of queries, between 0 and 1, got {source.noise}")
        if source.only not in (None, "absent", "present"):
            raise ValueError(f"{path}: 'only' must be absent or present, got {source.only!r}")
        if source.pairs != 1 and (source.kind != "mimo" or source.pairs < 1):
            raise ValueError(f"{path}: 'pairs' applies to kind mimo only and must be at least 1")
        if source.perspectives is not None:
            if source.kind != "mimo":
                raise ValueError(f"{path}: 'perspectives' applies to kind mimo only")
            unknown = set(source.perspectives) - set(PERSPECTIVES)
            if unknown:
                raise ValueError(f"{path}: unknown perspectives {sorted(unknown)}; choose from {', '.join(PERSPECTIVES)}")
    return TrainConfig(**raw)


def to_dict(config: TrainConfig) -> dict:
    return json_ready(dataclasses.asdict(config))


def json_ready(value):
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return str(value) if isinstance(value, Path) else value
