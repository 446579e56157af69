"""Training and evaluation data: dataset readers, query generation, demo data."""

from .records import DataError, Record

__all__ = ["DataError", "Record"]
