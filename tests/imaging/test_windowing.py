import numpy as np
import pytest

from medisee.imaging import CT_WINDOWS, MedicalImage, normalize_percentile, to_uint8, window_ct
from medisee.imaging.windowing import parse_window


def _image(array, modality=None, ndim=None):
    n = ndim or array.ndim
    return MedicalImage(array, (1.0,) * n, (0.0,) * n, tuple(np.eye(n).ravel()), modality=modality)


def test_presets():
    assert CT_WINDOWS == {
        "abdomen": (40, 400),
        "soft-tissue": (50, 350),
        "liver": (60, 160),
        "lung": (-600, 1500),
        "bone": (400, 1800),
        "brain": (40, 80),
        "mediastinum": (50, 350),
    }


def test_window_ct_hand_computed():
    # Abdomen window: [-160, 240] -> [0, 255]; 255/400 = 0.6375 per HU.
    hu = np.array([-1000, -160, 0, 40, 100, 240, 3000], dtype=np.int16)
    out = window_ct(hu, 40, 400)
    assert out.dtype == np.uint8
    # 0 HU: 160 * 0.6375 = 102; 40 HU: 127.5 -> 128; 100 HU: 165.75 -> 166.
    assert out.tolist() == [0, 0, 102, 128, 166, 255, 255]
    # Lung window: [-1350, 150]; -600 HU sits in the middle (127.5 -> 128).
    assert window_ct(np.array([-1350.0, -600.0, 150.0]), -600, 1500).tolist() == [0, 128, 255]


def test_window_ct_rejects_non_positive_width():
    with pytest.raises(ValueError, match="width must be positive"):
        window_ct(np.zeros(3), 40, 0)


def test_normalize_percentile_constant_image_is_zero():
    out = normalize_percentile(np.full((3, 4, 5), 7.5))
    assert out.dtype == np.uint8 and out.shape == (3, 4, 5) and not out.any()


def test_normalize_percentile_stretches_and_clips():
    ramp = np.arange(1001, dtype=np.float64)  # percentiles 0.5 / 99.5 are 5 and 995
    out = normalize_percentile(ramp)
    assert out[:6].tolist() == [0] * 6 and out[995:].tolist() == [255] * 6
    assert out[500] == 128  # (500 - 5) / 990 * 255 = 127.5
    assert normalize_percentile(ramp, 0, 100)[[0, 1000]].tolist() == [0, 255]


def test_normalize_percentile_uses_the_whole_volume():
    volume = np.stack([np.full((4, 4), 100.0), np.full((4, 4), 200.0)])
    out = normalize_percentile(volume, 0, 100)
    assert out[0].max() == 0 and out[1].min() == 255  # not each slice stretched on its own


def test_normalize_percentile_sparse_spike_falls_back_to_min_max():
    array = np.zeros((100, 100))
    array[0, 0] = 50.0  # both percentiles are 0
    out = normalize_percentile(array)
    assert out[0, 0] == 255 and out.sum() == 255


def test_to_uint8_ct_uses_abdomen_by_default():
    hu = np.array([[[-160, 40, 240]]], dtype=np.int16)
    np.testing.assert_array_equal(to_uint8(_image(hu, "CT")), [[[0, 128, 255]]])


def test_to_uint8_explicit_window():
    hu = np.array([[-1350, -600, 150]], dtype=np.int16)
    np.testing.assert_array_equal(to_uint8(_image(hu, "CT"), "lung"), [[0, 128, 255]])
    np.testing.assert_array_equal(to_uint8(_image(hu), (-600, 1500)), [[0, 128, 255]])


def test_to_uint8_passes_8_bit_through():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    assert to_uint8(_image(rgb, ndim=2)) is rgb
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5)
    assert to_uint8(_image(gray)) is gray


def test_to_uint8_mr_uses_percentiles():
    mr = np.arange(1001, dtype=np.int16).reshape(1, 7, 143)
    np.testing.assert_array_equal(to_uint8(_image(mr, "MR")), normalize_percentile(mr))


def test_unknown_window_lists_the_presets():
    with pytest.raises(ValueError, match="unknown CT window 'kidney': expected one of abdomen, soft-tissue, liver"):
        to_uint8(_image(np.zeros((2, 2), np.int16), "CT"), "kidney")


def test_to_uint8_windows_a_volume_in_hounsfield_units_without_a_modality():
    ct = np.array([[-1000, 40], [240, 1500]], dtype=np.int16)
    assert np.array_equal(to_uint8(_image(ct)), to_uint8(_image(ct, modality="CT")))
    padded = ct.copy()
    padded[0, 0] = -3024  # scanner padding outside the field of view
    assert to_uint8(_image(padded))[0, 1] == to_uint8(_image(ct, modality="CT"))[0, 1]
    mr = np.array([[0, 300], [900, 1200]], dtype=np.int16)
    assert np.array_equal(to_uint8(_image(mr)), normalize_percentile(mr))
    assert np.array_equal(to_uint8(_image(ct, modality="MR")), normalize_percentile(ct))


def test_parse_window_reads_presets_and_level_width_and_names_the_mistake():
    assert parse_window(None) is None and parse_window(" Bone") == "bone"
    assert parse_window("-600, 1500") == (-600.0, 1500.0) and parse_window((40, 80)) == (40.0, 80.0)
    with pytest.raises(ValueError, match="unknown window 'disco'; presets: abdomen"):
        parse_window("disco")
    for bad in ("40,0", "a,b", [1, 2, 3], "40,inf", "1,2,3"):
        with pytest.raises(ValueError, match="LEVEL,WIDTH"):
            parse_window(bad)
