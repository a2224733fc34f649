"""One handler per instruction family, registered by instruction type.

Each handler (dispatch/handler.py) holds both the cache inputs of its steps and the step
itself: config instructions (config.py), RUN (run.py, with mounts.py), COPY/ADD and WORKDIR
(files.py). ``handler_for`` is how the engine's step loop finds one.
"""

from __future__ import annotations

from cloche.dockerfile import instructions as ins
from cloche.engine.dispatch.config import APPLY, CONFIG
from cloche.engine.dispatch.files import COPY, WORKDIR
from cloche.engine.dispatch.handler import CacheInputs, Handler
from cloche.engine.dispatch.run import RUN
from cloche.errors import DockerfileError

__all__ = ["HANDLERS", "CacheInputs", "Handler", "handler_for"]

HANDLERS: dict[type[ins.Instruction], Handler] = {
    ins.Run: RUN, ins.Copy: COPY, ins.Add: COPY, ins.Workdir: WORKDIR,
    **{kind: CONFIG for kind in APPLY},
}


def handler_for(instruction: ins.Instruction) -> Handler:
    """The handler of ``instruction``'s type (FROM and the like have none inside a stage)."""
    handler = HANDLERS.get(type(instruction))
    if handler is None:
        raise DockerfileError(f"{instruction.keyword.upper()} cannot be used here")
    return handler
