"""The registry client: references, configuration (mirrors, insecure hosts), auth, pull and push.

Public names are re-exported here; the modules behind them are small and private in spirit.
"""

from cloche.registry.reference import DEFAULT_REGISTRY, DEFAULT_TAG, Reference, is_loopback

__all__ = ["DEFAULT_REGISTRY", "DEFAULT_TAG", "Reference", "is_loopback"]
