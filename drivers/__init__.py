"""Built-in driver plugins. Each sub-package is registered through the ``flamecast``
entry-point group in pyproject.toml, exactly as a third-party driver is."""
