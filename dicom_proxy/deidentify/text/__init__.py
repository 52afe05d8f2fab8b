"""Text: one normaliser for clean and verify (normalise.py), the object's identifying terms
(names.py), pattern scrubbing (patterns.py), cleaning (clean.py) and the descriptor
vocabulary (vocabulary.py)."""

from __future__ import annotations

from dicom_proxy.deidentify.text.clean import TextCleaner
from dicom_proxy.deidentify.text.names import Hit, Identifiers, Matcher
from dicom_proxy.deidentify.text.normalise import fold, folded
from dicom_proxy.deidentify.text.patterns import scrub_spans
from dicom_proxy.deidentify.text.vocabulary import Vocabulary

__all__ = ["Hit", "Identifiers", "Matcher", "TextCleaner", "Vocabulary", "fold", "folded", "scrub_spans"]
