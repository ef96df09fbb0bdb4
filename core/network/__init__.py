"""Floor 1, the network: a stack of layers (:class:`Network`), the model-file
schema (:mod:`~laminae.network.spec`) and the assembly of a model's parts
from a spec (:mod:`~laminae.network.assembly`).  Imports only the plugin API."""
from laminae.network.assembly import ModelParts, assemble, assemble_document, assemble_resolved, load_models
from laminae.network.network import Network
from laminae.network.spec import TrainConfig, read_toml

__all__ = [
    "ModelParts",
    "Network",
    "TrainConfig",
    "assemble",
    "assemble_document",
    "assemble_resolved",
    "load_models",
    "read_toml",
]
