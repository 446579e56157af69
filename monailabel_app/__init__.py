"""The MONAI Label app that serves MediSee (``main.py`` is what MONAI Label loads)."""
