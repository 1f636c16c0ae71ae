"""reprogrid: reproducibility meta-analysis of conflicting benchmark reports."""

__version__ = "0.1.0"
