import torch

from medisee.model.preprocess import clip_preprocess, postprocess_masks, resized_shape, sam_preprocess


def test_sam_preprocess_resizes_longest_side_normalises_and_pads():
    images = torch.full((1, 3, 50, 100), 255, dtype=torch.uint8)
    pixels, resized = sam_preprocess(images, 64, (100.0, 100.0, 100.0), (50.0, 50.0, 50.0))
    assert resized == (32, 64) == resized_shape(50, 100, 64)
    assert pixels.shape == (1, 3, 64, 64)
    torch.testing.assert_close(pixels[0, :, :32, :], torch.full((3, 32, 64), 3.1))
    assert pixels[0, :, 32:, :].abs().max() == 0  # zero padding at the bottom


def test_clip_preprocess_pads_to_square_with_the_mean_colour():
    images = torch.zeros((1, 3, 20, 40), dtype=torch.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    out = clip_preprocess(images, 8, mean, std, pad_to_square=True)
    assert out.shape == (1, 3, 8, 8)
    torch.testing.assert_close(out[0, :, 0, :], torch.zeros(3, 8), atol=0.05, rtol=0)  # mean-coloured band (antialiasing blurs its edge)
    assert out[0, :, 4, 4].max() < -1.9  # the black image sits in the middle
    cropped = clip_preprocess(images, 8, mean, std, pad_to_square=False)
    assert cropped.shape == (1, 3, 8, 8) and cropped.max() < -1.9


def test_postprocess_crops_padding_before_resizing_to_the_original():
    low = torch.zeros(1, 1, 16, 16)
    low[..., :8, :] = 5.0  # the top half of the padded frame = the whole resized image
    out = postprocess_masks(low, 64, resized=(32, 64), original=(50, 100))
    assert out.shape == (1, 50, 100)
    assert (out[0, 5:45] > 0).all()


def test_patch_coverage_follows_the_clip_canvas():
    from medisee.model.preprocess import clip_patch_coverage

    mask = torch.zeros(1, 4, 8)
    mask[0, :, :2] = 1  # the left quarter of a wide image
    # padded to 8x8 (2 rows above and below), 2x2 grid: the top-left cell holds rows 0-3 of which 2-3 are image
    torch.testing.assert_close(clip_patch_coverage(mask, 2, True), torch.tensor([[0.25], [0.0], [0.25], [0.0]]))
    # resize + centre crop keeps the middle 4x4 (columns 2-5): the mask lies outside it
    assert clip_patch_coverage(mask, 2, False).sum() == 0
    two = torch.stack([mask[0], 1 - mask[0]])
    torch.testing.assert_close(clip_patch_coverage(two, 4, True).sum(1)[4:12], torch.ones(8))  # shares add up inside the image
