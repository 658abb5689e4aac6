"""nbqueue's version (``nbqueue.__version__``; pyproject.toml says the same), in a module
of its own so that what reports it (a webhook's User-Agent, ``nbqueue --version``) need
not import the package's ``__init__``, which imports everything."""

__version__ = "0.1.0"
