"""The answer's JSON: its typed definition (``schema``, mirrored in MediSeeLib) and its one producer (``build``)."""

from .build import build_answer, entities_of
from .schema import SCHEMA_VERSION, Answer, AnswerFormatError, Entity, OutputFiles, SliceAnswer, SliceFinding, Structure

__all__ = ["SCHEMA_VERSION", "Answer", "AnswerFormatError", "Entity", "OutputFiles", "SliceAnswer", "SliceFinding", "Structure",
           "build_answer", "entities_of"]
