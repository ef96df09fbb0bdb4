"""The built-in plugins: plain plugin modules, registered through the same hooks
as any third-party package (the registry imports them by name:
``laminae.registry.BUILTIN_PLUGINS``)."""
