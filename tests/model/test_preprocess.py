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


def test_structure_coverage_is_the_share_of_each_cell_over_the_image():
    from medisee.model.preprocess import structure_coverage

    mask = torch.zeros(1, 4, 8)
    mask[0, :, :3] = 1  # the left 3 of 8 columns of a wide image
    # a 2x2 grid over the image itself: cells of 2 rows x 4 columns, row by row
    torch.testing.assert_close(structure_coverage(mask, 2), torch.tensor([[0.75], [0.0], [0.75], [0.0]]))
    two = torch.stack([mask[0], 1 - mask[0]])
    torch.testing.assert_close(structure_coverage(two, 4).sum(1), torch.ones(16))  # shares add up


def test_image_cells_drop_the_canvas_padding():
    from medisee.model.preprocess import image_cells

    image = torch.zeros(1, 3, 50, 100)
    pixels, resized = sam_preprocess(image, 64, (0.0,) * 3, (1.0,) * 3)  # 32 x 64 inside a padded 64 x 64 canvas
    assert resized == resized_shape(50, 100, 64) == (32, 64)
    canvas = torch.zeros(1, 8, 8)  # an 8 x 8 embedding: the image covers its top 4 rows
    canvas[0, :4] = torch.arange(4.0).view(4, 1)  # row index inside the image, padding stays 0
    canvas[0, 4:] = -5.0
    cells = image_cells(canvas, resized, 64, 8)
    assert cells.shape == (1, 8, 8) and cells.min() >= 0  # no padding cell reaches the grid
    assert torch.all(cells[0, 1:, 0] >= cells[0, :-1, 0])  # the image's rows, stretched top to bottom
    square = torch.randn(2, 8, 8)
    torch.testing.assert_close(image_cells(square, (64, 64), 64, 8), square)  # nothing to crop
