"""dicom-proxy: an anonymizing DICOM proxy (PS3.15 Annex E de-identification in flight)."""

__version__ = "0.1.0"
