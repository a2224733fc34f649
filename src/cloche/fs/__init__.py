"""File-system primitives shared by RUN, COPY, ADD, sources and layers: the bottom package.

``paths`` resolves a path inside a root as if chrooted (host paths, or no-follow fd walks);
``users`` resolves USER and --chown values in a rootfs; ``gopath`` holds Go's path rules
(``path.Clean``, ``filepath.Match``) that Dockerfile paths follow; ``tarentry`` is the typed
tar entry; ``extract`` is the one tar extractor (image layers with whiteouts, ADD's archives,
a context tar). It imports nothing of cloche but ``cloche.errors`` (and ``cloche.compression``)
so that every other package may use it; import the modules themselves (no re-exports here:
a RUN step's init process imports ``users`` and should not pay for the rest).
"""
