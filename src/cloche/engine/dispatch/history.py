"""The ``created_by`` text of history entries, spelled exactly as BuildKit spells it.

BuildKit prints several values with Go's fmt verbs (``%q`` of a string slice, ``%v`` of a
slice or a map, ``%+v`` of the healthcheck struct); tools and people compare these lines
between builders, so cloche reproduces Go's formatting here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cloche.dockerfile.dump import go_quote
from cloche.oci.config import Healthcheck

LAYER_SUFFIX = " # buildkit"  # BuildKit appends it to the steps that run LLB operations


def go_q_list(items: Sequence[str]) -> str:
    """Go's ``%q`` of a []string: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(x) for x in items) + "]"


def go_v_list(items: Iterable[str]) -> str:
    """Go's ``%v`` of a []string: ``[a b]``."""
    return "[" + " ".join(items) + "]"


def go_v_set(keys: Iterable[str]) -> str:
    """Go's ``%v`` of a map[string]struct{}: keys sorted, ``map[a:{} b:{}]``."""
    return "map[" + " ".join(f"{k}:{{}}" for k in sorted(keys)) + "]"


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): ``0s``, ``1.5s``, ``2m30s``, ``1h0m0s``, ``250ms``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns / size) + unit
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = _trim(rest / 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _trim(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def healthcheck(h: Healthcheck) -> str:
    """``HEALTHCHECK %+v`` of BuildKit's HealthcheckConfig struct."""
    return ("HEALTHCHECK {Test:" + go_v_list(h.test) + f" Interval:{go_duration(h.interval)}"
            f" Timeout:{go_duration(h.timeout)} StartPeriod:{go_duration(h.start_period)}"
            f" StartInterval:{go_duration(h.start_interval)} Retries:{h.retries}}}")


def run(args: Sequence[str], build_args: Sequence[tuple[str, str]]) -> str:
    """``RUN |N K=V ... argv...``: the ARGs in effect prefix the command, as BuildKit does."""
    words = [f"{k}={v}" for k, v in build_args]
    if words:
        words.insert(0, f"|{len(words)}")
    return "RUN " + " ".join(words + list(args)) + LAYER_SUFFIX


def copy(keyword: str, sources: Sequence[str], heredoc_names: Sequence[str], dest: str, *,
         chown: str | None, chmod: str | None, parents: bool) -> str:
    """``COPY [--parents] [--chown=..] [--chmod=..] SRC... DEST # buildkit`` (no --from)."""
    parts = [keyword]
    if parents:
        parts.append("--parents")
    if chown:
        parts.append(f"--chown={chown}")
    if chmod:
        parts.append(f"--chmod={chmod}")
    parts.extend(sources)
    parts.extend(f"<<{name}" for name in heredoc_names)
    parts.append(dest)
    return " ".join(parts) + LAYER_SUFFIX
