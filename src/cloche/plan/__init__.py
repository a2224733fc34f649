"""Planning a build: the stage graph, target reachability and parallel levels."""

from cloche.plan.graph import (
    BuildPlan,
    CircularDependencyError,
    Dependency,
    PlannedStage,
    build_plan,
)

__all__ = ["BuildPlan", "CircularDependencyError", "Dependency", "PlannedStage", "build_plan"]
