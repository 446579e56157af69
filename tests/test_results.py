import numpy as np

from medisee.imaging import MedicalImage
from medisee.predictor import Entity, Prediction
from medisee.results import assemble


def entity(phrase, mask, score):
    return Entity(phrase=phrase, mask=mask, box=(0, 0, 1, 1), score=score, mask_quality=0.5)


def test_entities_share_labels_by_phrase_and_higher_scores_win_overlaps():
    image = MedicalImage(np.zeros((3, 4, 5), np.int16), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    a = np.zeros((4, 5), bool)
    a[:2] = True
    b = np.zeros((4, 5), bool)
    b[1:3] = True
    predictions = [
        Prediction("x", [entity("liver", a, 0.9), entity("spleen", b, 0.6)], slice_index=0),
        Prediction("y", [entity("liver", b, 0.7)], slice_index=2),
    ]
    result = assemble(predictions, image)
    assert result.label_names == {1: "liver", 2: "spleen"}
    assert result.labels.shape == (3, 4, 5) and result.labels.dtype == np.uint8
    assert (result.labels[0, 1] == 1).all()  # liver (0.9) painted over spleen (0.6)
    assert (result.labels[0, 2] == 2).all() and (result.labels[1] == 0).all()
    assert (result.labels[2, 1:3] == 1).all()
    assert [(e["phrase"], e["slice"], e["label"]) for e in result.entities] == [
        ("liver", 0, 1), ("spleen", 0, 2), ("liver", 2, 1)]


def test_no_entities_gives_an_empty_label_volume():
    image = MedicalImage(np.zeros((2, 3, 3), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    result = assemble([Prediction("", [], slice_index=1)], image)
    assert result.labels.shape == (2, 3, 3) and not result.labels.any() and result.label_names == {}
