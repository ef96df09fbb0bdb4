"""laminae-extras: the plugin that docs/plugins.md builds, step by step.

This module is the entry point (``extras = "laminae_extras"``): Laminae
imports it and calls the hooks below, and each hook registers the classes
under the names a TOML file writes as ``type``.
"""
import laminae

from laminae_extras.activations import LeakyReLU, Tanh
from laminae_extras.jsonl_log import JsonLines
from laminae_extras.lion import Lion
from laminae_extras.noise import GaussianNoise
from laminae_extras.restarts import CosineRestarts
from laminae_extras.spatial_dropout import SpatialDropout
from laminae_extras.squeeze_excite import SqueezeExcite
from laminae_extras.uniform import Uniform

__version__ = "0.1.0"


@laminae.hookimpl
def register_layers(register):
    register("tanh", Tanh)
    register("leaky_relu", LeakyReLU)
    register("spatial_dropout", SpatialDropout)
    register("squeeze_excite", SqueezeExcite)


@laminae.hookimpl
def register_optimizers(register):
    register("lion", Lion)


@laminae.hookimpl
def register_initializers(register):
    register("uniform", Uniform)


@laminae.hookimpl
def register_transforms(register):
    register("gaussian_noise", GaussianNoise)


@laminae.hookimpl
def register_schedules(register):
    register("cosine_restarts", CosineRestarts)


@laminae.hookimpl
def register_loggers(register):
    register("jsonl", JsonLines)
