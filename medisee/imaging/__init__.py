"""Medical image I/O: reading, geometry, windowing, slicing and writing (numpy only, no torch)."""

from .errors import ImageReadError
from .image import MedicalImage
from .readers import read_image
from .slicing import AXES, acquisition_axis, assemble_volume, extract_slice, iter_slices, slice_axis
from .windowing import CT_WINDOWS, normalize_percentile, to_uint8, window_ct
from .writers import write_dicom_series, write_mask, write_overlay_png

__all__ = [
    "AXES",
    "CT_WINDOWS",
    "ImageReadError",
    "MedicalImage",
    "acquisition_axis",
    "assemble_volume",
    "extract_slice",
    "iter_slices",
    "normalize_percentile",
    "read_image",
    "slice_axis",
    "to_uint8",
    "window_ct",
    "write_dicom_series",
    "write_mask",
    "write_overlay_png",
]
