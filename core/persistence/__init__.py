"""Floor 2, persistence: checkpoints (a model's parts and its training position
in one ``.npz``, never pickled) and ONNX export (a model's network for other
runtimes), written through :func:`laminae.atomic.atomic_write` (re-exported
here).  Imports the network floor and the plugin API."""
from laminae.atomic import atomic_write
from laminae.persistence.checkpoint import CHECKPOINT_FILE, Checkpoint, checkpoint_path, read, save
from laminae.persistence.onnx_export import export_onnx

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "atomic_write", "checkpoint_path", "export_onnx", "read", "save"]
