"""The version, for modules inside the package.

They import it from here, not from ``llamasup``: the root package names the public API, so
importing it counts (for the layer contract) as importing ``llamasup.library`` and everything
under it, which ``service`` must not.
"""

__version__ = "0.1.0"
