import torch

from medisee.model.fusion import CandidateRouter


def test_router_weights_are_normalised_sigmoids_and_fuse_the_candidates():
    torch.manual_seed(0)
    router = CandidateRouter(hidden_size=16, num_candidates=3, gate_hidden=8)
    candidates = torch.randn(5, 3, 16)
    fused, weights = router(candidates)
    assert fused.shape == (5, 16) and weights.shape == (5, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(5))
    expected = torch.sigmoid(router.gate(candidates.flatten(1)))
    torch.testing.assert_close(weights, expected / expected.sum(-1, keepdim=True))
    torch.testing.assert_close(fused, (weights.unsqueeze(-1) * candidates).sum(1))


def test_router_parameter_names_match_the_released_checkpoint():
    names = set(dict(CandidateRouter(8, 2, 4).named_parameters()))
    assert names == {"gate.0.weight", "gate.0.bias", "gate.2.weight", "gate.2.bias"}
