"""Stage one's model registry: frozen vision backbones that yield per-block tokens.

``registry.load_model(name)`` returns a :class:`base.FeatureModel`; ``registry.list_models()``
describes the named models without downloading anything.
"""
