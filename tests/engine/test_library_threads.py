"""The library's own use case: two ``cloche.build()`` calls in threads of one Python process.

Each build has its own cancel scope: the first failure of one build stops that build's
steps only. With a process-wide cancel, build A's failing RUN killed build B's running step
and B failed with "cancelled" although nothing of B went wrong.
"""

from __future__ import annotations

import threading
import uuid

import cloche
from cloche.errors import BuildError
from tests.engine.conftest import BASE, Builder


def test_two_builds_in_threads_one_failing_one_succeeding(builder: Builder) -> None:
    nonce = uuid.uuid4().hex  # no cache hit from an earlier run
    failing = builder.context(f"FROM {BASE}\nRUN echo {nonce} && sleep 1 && exit 3\n")
    passing = builder.context(f"FROM {BASE}\nRUN echo {nonce} && sleep 4 && echo ok > /ok\n")
    outcomes: dict[str, object] = {}
    both_started = threading.Barrier(2)

    def build(name: str, context: str) -> None:
        both_started.wait()
        try:
            outcomes[name] = cloche.build(context, root=builder.root, tags=[f"t/{name}:1"])
        except BaseException as err:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[name] = err

    threads = [threading.Thread(target=build, args=("failing", str(failing))),
               threading.Thread(target=build, args=("passing", str(passing)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    failed, passed = outcomes["failing"], outcomes["passing"]
    assert isinstance(failed, BuildError) and "exit code: 3" in str(failed), failed
    assert isinstance(passed, cloche.BuildResult), passed
    assert builder.store.image("t/passing:1").digest == passed.digest
    assert len(passed.image.layers) == len(builder.store.image(BASE).layers) + 1
