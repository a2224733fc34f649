"""The OCI image core: digests, descriptors, manifests, configs, platforms, image values."""
