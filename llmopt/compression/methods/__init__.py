"""The built-in compression methods, one module each.

Nothing is listed here: ``registry.discover`` imports every module of this package, and each
module registers its method(s) and draws its explainer picture.
"""
