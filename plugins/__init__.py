"""The built-in plugins: plain plugin modules, registered through the same hooks
as any third-party package.  The core knows only this list of module names."""

BUILTIN_MODULES = [
    "laminae.plugins.affine",
    "laminae.plugins.activations",
    "laminae.plugins.flatten",
    "laminae.plugins.conv",
    "laminae.plugins.pool",
    "laminae.plugins.losses",
    "laminae.plugins.sgd",
    "laminae.plugins.initializers",
    "laminae.plugins.mnist",
]
