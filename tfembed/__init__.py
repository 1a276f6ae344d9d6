"""tfembed: deep image embeddings and knowledge transfer between embedding models (Keras 3)."""

__version__ = "0.1.0"
