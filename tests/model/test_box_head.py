import torch

from medisee.model.box_head import BoxDecoder


def test_box_decoder_starts_at_a_centred_box_and_stays_in_unit_range():
    decoder = BoxDecoder(in_dim=32, hidden=16)
    assert [tuple(layer.weight.shape) for layer in decoder.layers] == [(16, 32), (16, 16), (4, 16)]
    out = decoder(torch.randn(7, 32))
    torch.testing.assert_close(out, torch.full((7, 4), 0.5))
    torch.nn.init.normal_(decoder.layers[-1].weight, std=5)
    out = decoder(torch.randn(7, 32) * 10)
    assert out.min() >= 0 and out.max() <= 1

