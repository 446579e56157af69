"""Errors raised while reading medical images."""


class ImageReadError(ValueError):
    """A file or folder cannot be read as a medical image.

    The message is one line, names the path and says what is wrong, so callers
    (CLI, Slicer, MONAI Label) can show it to the user as-is.
    """
