"""MediSee configuration and named presets.

One dataclass tree describes the whole model so a checkpoint folder can be rebuilt from
its ``config.json`` alone. The sub-configs translate to ``transformers`` configs in
``to_hf()``; nothing here allocates weights.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import CLIPVisionConfig, MistralConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig
from transformers import SamConfig as HFSamConfig


@dataclass
class TextConfig:
    """The Mistral language model of the MLLM."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1_000_000.0
    sliding_window: int | None = None
    bos_token_id: int = 1
    eos_token_id: int = 2

    def to_hf(self):
        return MistralConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            sliding_window=self.sliding_window,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            tie_word_embeddings=False,
        )


@dataclass
class ClipConfig:
    """The CLIP vision tower; features come from ``feature_layer`` without the CLS token."""

    image_size: int = 336
    patch_size: int = 14
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    feature_layer: int = -2
    # True (ours): pad to a square with the mean colour; False: resize the short side and
    # centre-crop, as the reference's CLIP processor does (non-square images lose their edges)
    pad_to_square: bool = True
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_hf(self):
        return CLIPVisionConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            hidden_act="quick_gelu",
        )


@dataclass
class SamConfig:
    """The MedSAM (SAM ViT) mask head: image encoder, prompt encoder and mask decoder."""

    image_size: int = 1024
    patch_size: int = 16
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_layers: int = 2
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # Ours (off unless configured): a small convolution stem on the input pixels adds detail
    # at the mask resolution to the decoder's upscaled embedding, as HQ-SAM adds early
    # features; its last layer starts at zero, so adding it to a trained model changes nothing.
    fine_features: bool = False
    # LayerNorm eps of the mask decoder's two-way transformer: transformers' SAM uses 1e-6,
    # segment-anything (what MedSAM and the released MediSee were trained with) 1e-5
    decoder_layer_norm_eps: float = 1e-6
    # The box prompt as the reference computes it: "bfloat16" rounds the scaled (cx, cy, w, h)
    # box, its corners and their normalisation to bfloat16 before the positional encoding (the
    # reference casts the box so); None keeps it in the model's dtype (ours)
    box_prompt_dtype: str | None = None
    # The frame the predicted box is scaled into: "image" (ours: the resized image inside the
    # padded square) or "canvas" (the reference: the whole square, right for square images only)
    box_prompt_frame: str = "image"

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size

    def to_hf(self):
        vision = SamVisionConfig(
            hidden_size=self.hidden_size,
            output_channels=self.prompt_dim,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            window_size=self.window_size,
            global_attn_indexes=list(self.global_attn_indexes),
            num_pos_feats=self.prompt_dim // 2,
        )
        prompt = SamPromptEncoderConfig(
            hidden_size=self.prompt_dim, image_size=self.image_size, patch_size=self.patch_size
        )
        decoder = SamMaskDecoderConfig(
            hidden_size=self.prompt_dim,
            mlp_dim=self.decoder_mlp_dim,
            num_hidden_layers=self.decoder_layers,
            num_attention_heads=self.decoder_heads,
            iou_head_hidden_dim=self.iou_head_hidden_dim,
            layer_norm_eps=self.decoder_layer_norm_eps,
        )
        return HFSamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


@dataclass
class LoraSettings:
    """LoRA on the language model (paper: rank 8, alpha 16, dropout 0.05 on q_proj/v_proj)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass
class LossWeights:
    """Weights of the training objective (reference code; eq. 4 and eq. 5 of the paper)."""

    ce: float = 1.0
    bce: float = 2.0
    dice: float = 0.5
    box: float = 2.0  # applied to L1 + GIoU
    js: float = 2.0
    mse: float = 1.0
    # Not in the paper (0 = off): extra CE on each answer's first token, the word that says
    # whether the target is there at all ("Sure" or "The ... is not visible"). In the plain
    # CE it is one token of dozens; a model trained from scratch needs it weighed up to learn
    # presence (the 7B model inherits it from LLaVA-Med).
    decision: float = 0.0
    # Not in the paper (0 = off): extra CE on the answer's tokens that name a structure
    # (``MediSeeConfig.patch_classes``), on the token after each grounded group (another
    # group or the end) and on the form after the opening "Sure," (one entity or several):
    # the few words that say what was found and how many, which a model
    # trained from scratch otherwise learns last.
    naming: float = 0.0
    # Not in the paper: BCE of the patch head (``MediSeeConfig.patch_classes``), when the
    # model has one and a sample knows every structure on its slice.
    patch: float = 1.0
    # Not in the paper: BCE of the query head (``MediSeeConfig.query_tags``) on which
    # catalogue structures the question asks for, when the sample knows it.
    query: float = 1.0


@dataclass
class VisualPromptConfig:
    """MIMO's visual referring input (section 3.2.1): a box and points encoded like SAM's
    prompt encoder, then a cross-attention input aligner with learnable queries whose
    output joins the image tokens in the LLM's image slot. ``aligner=False`` is MIMO's
    "w/o Aligner" ablation: the projected prompt tokens go to the LLM directly."""

    embed_dim: int = 256  # width of the positional encoding and type embeddings (SAM: 256)
    max_points: int = 1
    aligner: bool = True
    num_queries: int = 32
    aligner_layers: int = 2
    aligner_heads: int = 8
    # ours: the mean CLIP token inside the box and the token under each point join the image
    # slot as tokens of their own (the LLM reads them as it reads the patches)
    region_features: bool = False

    @property
    def num_prompt_tokens(self) -> int:
        """Two box corners and ``max_points`` points; absent ones carry a "not a prompt" type."""
        return 2 + self.max_points

    @property
    def num_slot_tokens(self) -> int:
        """Tokens appended to the image slot of the LLM input."""
        region = 1 + self.max_points if self.region_features else 0
        return (self.num_queries if self.aligner else self.num_prompt_tokens) + region


BOX_SOURCES = ("decoder", "mask")
PROMPT_FORMATS = ("ours", "reference")
IMAGE_RESIZES = ("torch", "pil")
BOX_PROMPT_FRAMES = ("image", "canvas")


@dataclass
class MediSeeConfig:
    """The whole model. ``candidate_tokens`` are in answer order; the routers see them in
    ``router_input_order`` (the released weights concatenate [h_BBOX, h_SEG])."""

    name: str = "medisee-7b"
    text: TextConfig = field(default_factory=TextConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    candidate_tokens: tuple[str, ...] = ("[SEG]", "[BBOX]")
    router_input_order: tuple[str, ...] = ("[BBOX]", "[SEG]")
    router_hidden: int = 1024
    box_hidden: int = 512
    image_token: str = "<image>"
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    loss: LossWeights = field(default_factory=LossWeights)
    score_threshold: float = 0.5
    max_new_tokens: int = 128
    tokenizer: str | None = None  # folder of the tokenizer; relative paths resolve against the checkpoint
    visual_prompts: VisualPromptConfig | None = None  # None: MediSee as released (box/point only prompt SAM)
    # Not in the paper: structures a patch head learns to find in each cell of the mask
    # head's image embedding (what share of the cell each covers). A language model trained
    # from scratch does not learn from its own loss alone which structures a slice shows.
    patch_classes: tuple[str, ...] = ()
    # Ours, needs ``patch_classes``: the image slot ends with "visual tags", one token per
    # patch class (its name mixed with "No" by the patch head's highest probability for it
    # on the slice) and, with visual prompts, one per box/point (the names weighed by the
    # head's probabilities inside the box / under the point): what the slice and the
    # prompt show, in words the language model already reads.
    visual_tags: bool = False
    # The box reported for an entity: "decoder" (the box decoder, as the paper) or "mask"
    # (the tight box of the entity's mask, which the decoder's box prompted). Ours: chosen
    # on validation data by ``medisee.evaluation.calibrate`` (the one with the higher Acc@0.5).
    box_source: str = "decoder"
    # Ours, needs ``patch_classes``: each entity's score is multiplied by the patch head's
    # belief that the structure the model means is on the slice (``medisee.presence``).
    presence_gate: bool = False
    # Ours, needs ``patch_classes``: "query tags" follow the visual tags, one token per
    # patch class, its name mixed with "No" by how surely the question asks for it (a query
    # head on the embedding of ``sentence_encoder``, a frozen pretrained model that is not
    # stored in the checkpoint): how people word a request, which a language model trained
    # from scratch on generated phrasings cannot learn (docs/ARCHITECTURE.md).
    query_tags: bool = False
    sentence_encoder: str = "all-MiniLM-L6-v2"
    query_head_hidden: int = 256
    # Ours, needs ``query_tags``: each entity's score is also multiplied by how surely the
    # question asks for the structure the model means (the query head), unless a drawn box
    # or click says what is meant: a structure the question does not ask for, or one outside
    # the catalogue, is not answered with the nearest structure the model knows.
    query_gate: bool = False
    # How conversations become token ids: "ours" (each part tokenised on its own) or "reference"
    # (LLaVA's mistral_instruct text "[INST] <image>\n{query} [/INST] {answer} </s>" tokenised as
    # the reference code's slow, legacy Llama tokenizer does; ``medisee.tokenizer.LegacyEncoder``)
    prompt_format: str = "ours"
    # The answer fast mode teacher-forces ({tokens}: the candidate tokens joined by "and")
    fast_answer: str = "Sure, it is {tokens}."
    # How images are resized: "torch" (ours: float, antialiased) or "pil" (the reference:
    # uint8 PIL resizes, bilinear for SAM as segment-anything, bicubic for CLIP as its processor)
    image_resize: str = "torch"

    def __post_init__(self) -> None:
        if sorted(self.router_input_order) != sorted(self.candidate_tokens):
            raise ValueError("router_input_order must be a permutation of candidate_tokens")
        if len(set(self.candidate_tokens)) != len(self.candidate_tokens) or len(self.candidate_tokens) < 1:
            raise ValueError("candidate_tokens must be one or more distinct tokens")
        if len(set(self.patch_classes)) != len(self.patch_classes) or not all(self.patch_classes):
            raise ValueError("patch_classes must be distinct, non-empty structure names")
        if self.box_source not in BOX_SOURCES:
            raise ValueError(f"box_source must be one of {', '.join(BOX_SOURCES)}, got {self.box_source!r}")
        for name, value, allowed in (("prompt_format", self.prompt_format, PROMPT_FORMATS),
                                     ("image_resize", self.image_resize, IMAGE_RESIZES),
                                     ("sam.box_prompt_frame", self.sam.box_prompt_frame, BOX_PROMPT_FRAMES),
                                     ("sam.box_prompt_dtype", self.sam.box_prompt_dtype, (None, "bfloat16"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        if "{tokens}" not in self.fast_answer:
            raise ValueError("fast_answer must contain {tokens} (where the candidate tokens go)")
        if self.visual_tags and not self.patch_classes:
            raise ValueError("visual_tags needs patch_classes (the patch head that tags the image)")
        if self.presence_gate and not self.patch_classes:
            raise ValueError("presence_gate needs patch_classes (the patch head that sees what the slice shows)")
        if self.query_tags and not self.patch_classes:
            raise ValueError("query_tags needs patch_classes (the structures a question can ask for)")
        if self.query_gate and not self.query_tags:
            raise ValueError("query_gate needs query_tags (the query head that reads what the question asks for)")

    @property
    def num_candidates(self) -> int:
        return len(self.candidate_tokens)

    @property
    def num_image_slot_tokens(self) -> int:
        """LLM input positions of the image slot: CLIP patches, then any visual-prompt tokens."""
        extra = self.visual_prompts.num_slot_tokens if self.visual_prompts is not None else 0
        return self.clip.num_patches + extra + self.num_tag_tokens

    @property
    def num_tag_tokens(self) -> int:
        """Tags at the end of the image slot: visual tags (one per patch class, one per
        prompt), then query tags (one per patch class)."""
        queried = len(self.patch_classes) if self.query_tags else 0
        if not self.visual_tags:
            return queried
        prompts = 1 + self.visual_prompts.max_points if self.visual_prompts is not None else 0
        return len(self.patch_classes) + prompts + queried

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MediSeeConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown MediSee config keys: {sorted(unknown)}")
        nested = {"text": TextConfig, "clip": ClipConfig, "sam": SamConfig, "loss": LossWeights}
        for key, sub in nested.items():
            if key in data:
                data[key] = _build(sub, data[key])
        if data.get("lora") is not None:
            data["lora"] = _build(LoraSettings, data["lora"])
        if data.get("visual_prompts") is not None:
            data["visual_prompts"] = _build(VisualPromptConfig, data["visual_prompts"])
        for key in ("candidate_tokens", "router_input_order", "patch_classes"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "MediSeeConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _build(cls: type, data: dict[str, Any]):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


def _tiny() -> MediSeeConfig:
    """Same architecture at small widths: a CPU forward pass in well under a second."""
    return MediSeeConfig(
        name="tiny",
        text=TextConfig(
            vocab_size=2048,
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            rope_theta=10_000.0,
        ),
        clip=ClipConfig(
            image_size=112, patch_size=14, hidden_size=96, intermediate_size=384,
            num_hidden_layers=4, num_attention_heads=4,
        ),
        sam=SamConfig(
            image_size=256, patch_size=8, hidden_size=96, num_hidden_layers=4,
            num_attention_heads=4, window_size=8, global_attn_indexes=(1, 3),
            prompt_dim=64, decoder_mlp_dim=256, decoder_layers=2, decoder_heads=4,
            iou_head_hidden_dim=64,
        ),
        router_hidden=128,
        box_hidden=128,
        max_new_tokens=64,
        tokenizer="tokenizer",
        visual_prompts=VisualPromptConfig(embed_dim=64, num_queries=16, aligner_layers=2, aligner_heads=4),
    )


def _medisee_7b() -> MediSeeConfig:
    """The paper's sizes: LLaVA-Med v1.5 (Mistral-7B) + CLIP ViT-L/14-336 + MedSAM ViT-B, with
    the reference's inference (docs/ARCHITECTURE.md lists what is identical and what is ours):
    its prompt text and tokenisation, its fast-mode answer, centre-cropped CLIP input, PIL
    resizes, the bfloat16 box prompt in the square canvas, segment-anything's LayerNorm eps,
    and no score threshold (the reference returns every mask)."""
    return MediSeeConfig(
        name="medisee-7b",
        text=TextConfig(vocab_size=32002),  # 32000 + [SEG], [BBOX]
        clip=ClipConfig(pad_to_square=False),
        sam=SamConfig(decoder_layer_norm_eps=1e-5, box_prompt_dtype="bfloat16", box_prompt_frame="canvas"),
        prompt_format="reference",
        fast_answer="{tokens}.",
        image_resize="pil",
        score_threshold=0.0,
    )


PRESETS = {"tiny": _tiny, "medisee-7b": _medisee_7b}


def preset(name: str) -> MediSeeConfig:
    """A fresh config for a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
