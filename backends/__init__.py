"""Framework backends, installed as ``xrayprototype.backends``.

Each sub-package implements :class:`xrayprototype.backend.Backend` for one framework and is
imported only when an experiment asks for it; importing this package imports no framework.
"""
