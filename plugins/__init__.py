"""The built-in plugins: plain plugin modules, registered through the same hooks
as any third-party package (the registry imports them by name:
``laminae.registry.BUILTIN_PLUGINS``).

Each module at this level is one plugin and opens with what it computes;
they import the plugin API only, never each other.  The sub-folders hold
what they use and register nothing:

- ``reference/``: the layers as plain loops, slow and obviously right;
- ``windows/``: where sliding windows lie, im2col and col2im, first maxima;
- ``layout/`` and ``gemm/``: the conv's memory layout and matrix products;
- ``data_files/``: downloading and reading the files data sets come in.
"""
