import torch

from medisee.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh


def test_box_conversions_are_inverse():
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)
    torch.testing.assert_close(xyxy_to_cxcywh(boxes)[0], torch.tensor([0.3, 0.55, 0.4, 0.7]))
