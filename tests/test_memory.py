"""`medisee info --memory`: the memory each precision needs, from parameter counts on the meta device."""

from __future__ import annotations

import resource

import torch

from medisee.cli import main
from medisee.config import preset
from medisee.memory import GIB, memory_rows
from medisee.model.medisee import MediSeeModel


def test_memory_rows_follow_the_parameter_counts():
    config = preset("medisee-7b")
    with torch.device("meta"):
        model = MediSeeModel(config, (32000, 32001))
    rows = {row.precision: row for row in memory_rows(model, config)}
    total = sum(p.numel() for p in model.parameters())
    assert rows["fp32"].weights == 4 * total and rows["bf16"].weights == 2 * total
    layers = [p for n, p in model.named_parameters() if n.startswith("mllm.language_model.model.layers.")
              and p.ndim == 2 and "lora_" not in n]
    linear = sum(p.numel() for p in layers)
    assert 6.9e9 < linear < 7.0e9  # Mistral-7B's attention and MLP matrices
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    rest = total - linear - lora
    assert rows["8-bit"].weights == linear + 4 * sum(p.shape[0] for p in layers) + 2 * rest
    assert rows["8-bit"].weights < rows["bf16"].weights * 0.56 and rows["4-bit"].weights < rows["bf16"].weights * 0.34
    assert [rows[p].suggested_gpu_gib for p in ("bf16", "8-bit", "4-bit")] == [24, 12, 8]
    kv = 2 * 32 * 8 * 128 * 2 * (576 + 64 + config.max_new_tokens)  # K and V, 32 layers, 8 KV heads of 128, bf16
    assert rows["bf16"].kv_cache == kv


def test_info_memory_prints_every_precision_without_allocating(capsys):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["info", "--preset", "medisee-7b", "--memory"]) == 0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1024 * 1024  # KiB: under 1 GiB grew
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip().split()[:1] in (["fp32"], ["bf16"], ["8-bit"], ["4-bit"])}
    assert set(lines) == {"fp32", "bf16", "8-bit", "4-bit"}
    assert float(lines["bf16"].split()[1]) == round(2 * 7_700_355_128 / GIB, 2)
    assert lines["bf16"].split()[-2:] == ["24", "GB"]
