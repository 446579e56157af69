import pytest

from medisee.config import MediSeeConfig, preset


def test_presets_have_the_papers_sizes():
    big = preset("medisee-7b")
    assert (big.text.hidden_size, big.text.num_hidden_layers, big.text.num_attention_heads) == (4096, 32, 32)
    assert big.text.num_key_value_heads == 8
    assert big.clip.num_patches == 576 and big.clip.hidden_size == 1024 and big.clip.feature_layer == -2
    assert (big.sam.hidden_size, big.sam.num_hidden_layers, big.sam.embedding_size) == (768, 12, 64)
    assert big.sam.global_attn_indexes == (2, 5, 8, 11) and big.sam.prompt_dim == 256
    assert big.candidate_tokens == ("[SEG]", "[BBOX]") and big.router_input_order == ("[BBOX]", "[SEG]")
    assert (big.lora.r, big.lora.alpha, big.lora.dropout, big.lora.target_modules) == (8, 16, 0.05, ("q_proj", "v_proj"))
    w = big.loss
    assert (w.ce, w.bce, w.dice, w.box, w.js, w.mse) == (1.0, 2.0, 0.5, 2.0, 2.0, 1.0)


def test_config_round_trips_through_json(tmp_path):
    config = preset("tiny")
    config.save(tmp_path / "config.json")
    assert MediSeeConfig.load(tmp_path / "config.json") == config


def test_unknown_preset_and_keys_are_clear_errors():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")
    with pytest.raises(ValueError, match="unknown MediSee config keys"):
        MediSeeConfig.from_dict({"nonsense": 1})
    with pytest.raises(ValueError, match="permutation"):
        MediSeeConfig(router_input_order=("[SEG]", "[X]"))
