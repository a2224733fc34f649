"""The face's image operations that join several parts of cloche (``cloche.api`` calls them).

``importer`` (``docker import``: a root filesystem as a one-layer image), ``changes`` (its
``--change`` lines, through the Dockerfile front end and the engine's config handlers),
``transfer`` (save and load of OCI archives and docker-archives) and ``describe`` (what
``images`` and ``inspect`` show). They live above the store, which keeps only blobs, names and
locks, and may use any part below the face. Import the modules directly: each loads only what
its operation needs.
"""
