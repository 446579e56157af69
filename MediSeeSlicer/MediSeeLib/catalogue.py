"""Generated from medisee/data/catalogue.json by `python -m medisee.data.catalogue PATH`: do not edit.

tests/data/test_catalogue.py fails when it differs from the catalogue."""

from __future__ import annotations

# structure -> (code, meaning, scheme); structures without a checked code are left out
CODES: dict[str, tuple[str, str, str]] = {
    'liver': ('10200004', 'Liver', 'SCT'),
    'spleen': ('78961009', 'Spleen', 'SCT'),
    'left kidney': ('18639004', 'Left kidney', 'SCT'),
    'right kidney': ('9846003', 'Right kidney', 'SCT'),
    'aorta': ('15825003', 'Aorta', 'SCT'),
    'left lung': ('44029006', 'Left lung', 'SCT'),
    'right lung': ('3341006', 'Right lung', 'SCT'),
    'heart': ('80891009', 'Heart', 'SCT'),
    'stomach': ('69695003', 'Stomach', 'SCT'),
    'brain': ('12738006', 'Brain', 'SCT'),
    'kidney': ('64033007', 'Kidney', 'SCT'),
    'lung': ('39607008', 'Lung', 'SCT'),
}
# structure -> display colour (0-255 RGB)
COLOURS: dict[str, tuple[int, int, int]] = {
    'liver': (177, 89, 40),
    'spleen': (106, 61, 154),
    'left kidney': (31, 120, 180),
    'right kidney': (166, 206, 227),
    'aorta': (227, 26, 28),
    'vertebra': (255, 237, 160),
    'left lung': (51, 160, 44),
    'right lung': (178, 223, 138),
    'heart': (251, 154, 153),
    'stomach': (253, 191, 111),
    'brain': (202, 178, 214),
    'grey matter': (150, 150, 150),
    'white matter': (240, 240, 240),
    'lateral ventricles': (0, 200, 200),
}
