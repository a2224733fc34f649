"""The registry client: references, configuration (mirrors, insecure hosts), auth, pull and push.

Public names are re-exported here; the modules behind them are small and private in spirit.
"""

from cloche.oci.reference import DEFAULT_REGISTRY, DEFAULT_TAG, Reference, is_loopback  # re-exported

__all__ = ["DEFAULT_REGISTRY", "DEFAULT_TAG", "Reference", "is_loopback",
           "RegistryClient", "RegistryConfig", "pull_image", "pull_blobs", "push_image",
           "push_manifest", "push_stored"]


def __getattr__(name: str) -> object:  # lazy: importing the package must not load httpx
    if name == "RegistryClient":
        from cloche.registry.client import RegistryClient
        return RegistryClient
    if name == "RegistryConfig":
        from cloche.registry.config import RegistryConfig
        return RegistryConfig
    if name in ("pull_image", "pull_blobs"):
        from cloche.registry import pull
        return getattr(pull, name)
    if name in ("push_image", "push_manifest", "push_stored"):
        from cloche.registry import push
        return getattr(push, name)
    raise AttributeError(name)
