"""Monk's import paths, so a Monk v1 script runs here by changing its import line only.

Monk v1 -> xrayprototype, one import line each:

- ``from monk.pytorch_prototype import prototype``
  -> ``from xrayprototype.monk.pytorch_prototype import prototype``
- ``from monk.gluon_prototype import prototype``
  -> ``from xrayprototype.monk.gluon_prototype import prototype``
- ``from monk.keras_prototype import prototype``
  -> ``from xrayprototype.monk.keras_prototype import prototype``
- ``from monk.compare_prototype import compare``
  -> ``from xrayprototype.monk.compare_prototype import compare``

As in Monk, the import chooses the backend: every experiment such a ``prototype`` creates uses
it, Monk's model names for that backend are understood (``resnet18_v1`` on Gluon,
``inception_resnet_v3`` on Keras ...), and opening an experiment trained with another backend
is refused with the import to use instead. Everything else is the library's own ``prototype``
(see README "Coming from Monk" for what is stricter, and why).

Nothing here imports a framework: the backend is imported when the first experiment opens.
"""
