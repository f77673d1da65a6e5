"""Counterfeit's serving half: BentoML over onnxruntime, driven by the model cards. No torch."""

__version__ = "0.2.0"
