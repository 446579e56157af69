"""Real MRML without the Slicer application: the slicer-core wheel's scene, segmentations,
markups and volumes logic, set up as Slicer sets them up (trame-slicer's ``SlicerApp``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import vtk
from trame_slicer.core import SlicerApp
from vtk.util import numpy_support


def array_of(image) -> np.ndarray:
    """A VTK image's scalars in numpy (k, j, i) order."""
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def load_volume(app: SlicerApp, path: Path):
    """A volume node as Slicer loads it: a DICOM series folder (its files) or one file."""
    files = sorted(str(p) for p in path.iterdir()) if path.is_dir() else [str(path)]
    (volume,) = app.io_manager.load_volumes(files)
    return volume


def load_labelmap(app: SlicerApp, path: Path):
    """A label file as a labelmap volume node (what MONAI Label's Slicer plugin pushes into the scene)."""
    return app.volumes_logic.AddArchetypeVolume(str(path), path.name, 1)


def segment_mask(app: SlicerApp, segmentation, segment_id: str, reference) -> np.ndarray:
    """One segment as a boolean (k, j, i) array on ``reference``'s grid, through Slicer's own export."""
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    labelmap = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    try:
        assert app.segmentations_logic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, reference)
        assert np.allclose(ijk_to_ras(labelmap), ijk_to_ras(reference))
        return array_of(labelmap.GetImageData()) > 0
    finally:
        app.scene.RemoveNode(labelmap)


def sitk_ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """SimpleITK's index -> LPS mapping as Slicer's IJK -> RAS matrix."""
    matrix = np.eye(4)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix[:3, :3] = lps_to_ras @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = lps_to_ras @ np.array(image.GetOrigin())
    return matrix


def read_sitk(path: Path) -> sitk.Image:
    """SimpleITK's reading of a file or a DICOM series folder."""
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def nodes(app: SlicerApp, class_name: str) -> list:
    collection = app.scene.GetNodesByClass(class_name)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]
