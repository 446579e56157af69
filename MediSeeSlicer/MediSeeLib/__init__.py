"""MediSee's 3D Slicer module logic without Slicer: HTTP client, response -> segment and ROI specs,
IJK/RAS geometry, scope bookkeeping, local server and install planning.

Pure Python (requests, numpy; SimpleITK for label files), so it runs in Slicer's Python and under
pytest against a real server alike. It never imports slicer, qt, vtk, ctk or the medisee package.
"""
