"""``laminae export CHECKPOINT OUT.onnx``: a trained model as an ONNX file (needs laminae[onnx]).

The file takes float32 images (N, C, H, W), any N, under the name
``images``, and returns the class probabilities that ``laminae predict``
shows, or with ``--logits`` the network's outputs as they are; docs/export.md
runs it with onnxruntime.  How layers become ONNX nodes:
:mod:`laminae.persistence.onnx_export`.
"""
from __future__ import annotations

import argparse

from laminae.cli import plugin_options, registry_from
from laminae.errors import location

HELP = "write a checkpoint's model as an ONNX file, for onnxruntime (needs laminae[onnx])"
EXAMPLE = "laminae export runs/lenet lenet.onnx"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a model.npz file, or a run directory holding one")
    parser.add_argument("out", metavar="OUT", help="the ONNX file to write (replaced if it exists)")
    parser.add_argument("--logits", action="store_true", help="return the network's outputs, not class probabilities")
    plugin_options(parser)


def run(args: argparse.Namespace) -> int:
    from laminae.model import load
    from laminae.persistence.checkpoint import checkpoint_path
    from laminae.persistence.onnx_export import onnx_package

    onnx_package()  # before the checkpoint is read: it would be read in vain
    model = load(args.checkpoint, registry=registry_from(args))
    with location(f"{checkpoint_path(args.checkpoint)}: model {model.name!r}"):
        path = model.export_onnx(args.out, logits=args.logits)
    output = "logits" if args.logits else "class probabilities"
    print(f"wrote {path}: images {('N', *model.network.input_shape)} -> {output} (N, {model.network.output_shape[0]})".replace("'", ""))
    return 0
