"""A build's cancel scope: the RUN steps it started, so that it can end them, and no others."""

from __future__ import annotations

import signal
import subprocess
import threading

from cloche.errors import SandboxError


class StepCancelled(SandboxError):
    """The step was killed because its ``CancelScope`` was cancelled (the build stopped)."""


class CancelScope:
    """The steps of one build, so that the build can end them all and no others.

    Ctrl-C raises KeyboardInterrupt in the main thread only, and a failing stage must stop
    its siblings; the steps run by worker threads would go on (their processes are in their
    own sessions, out of the terminal's reach). Each build owns one scope and passes it in
    every ``RunSpec``: ``cancel()`` kills that build's running steps, and a step that starts
    after it (a worker between its last check and its step's start) is killed at once. Two
    builds in one process have two scopes and never stop each other.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: dict[int, tuple[subprocess.Popen[bytes], list[int]]] = {}
        self._killed: set[int] = set()
        self._event = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> int:
        """Kill every step of this scope now and any started later; their ``run`` raises
        StepCancelled. Returns how many steps were running."""
        self._event.set()  # before the lock: a step registering now sees it (_enter)
        with self._lock:  # held while killing: run() closes the pidfd only after leaving
            steps = list(self._steps.items())
            self._killed.update(key for key, _ in steps)
            for _, (proc, pid1) in steps:
                kill_step(proc, pid1[0], wait=False)
        return len(steps)

    def _enter(self, key: int, proc: subprocess.Popen[bytes], pid1: list[int]) -> bool:
        """Register a started step; True when the scope is already cancelled."""
        with self._lock:
            self._steps[key] = (proc, pid1)
            if self._event.is_set():
                self._killed.add(key)
            return key in self._killed

    def _leave(self, key: int) -> bool:
        """Forget a step; True when it was killed by ``cancel``."""
        with self._lock:
            self._steps.pop(key, None)
            killed = key in self._killed
            self._killed.discard(key)
            return killed


def kill_step(proc: subprocess.Popen[bytes], pid1: int, *, wait: bool = True) -> None:
    """End the step: the namespace's PID 1 (all its processes die with it) and the helper.

    The helper's death alone would do (PID 1 has PDEATHSIG), this is the second guard.
    """
    if pid1 >= 0:
        try:
            signal.pidfd_send_signal(pid1, signal.SIGKILL)
        except OSError:
            pass
    if proc.poll() is None:
        proc.kill()
    if wait:
        proc.wait()
