"""metav1.Condition bookkeeping: keep lastTransitionTime unless the status really changes."""

from __future__ import annotations

from dataclasses import dataclass

from .spec import Condition

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
# Conditions another timer owns (handlers_bootstrap): carried over unchanged by merge.
OWNED_ELSEWHERE = ("Bootstrapped",)


@dataclass(frozen=True)
class Verdict:
    """A condition's wanted state, before timestamps."""

    type: str
    status: bool
    reason: str
    message: str = ""


def merge(
    previous: list[Condition], verdicts: list[Verdict], now: str, generation: int | None
) -> list[Condition]:
    """New conditions; lastTransitionTime moves only when status flips. Conditions of
    OWNED_ELSEWHERE without a verdict here are kept as they were."""
    old = {c.type: c for c in previous}
    judged = {v.type for v in verdicts}
    kept = [c for c in previous if c.type in OWNED_ELSEWHERE and c.type not in judged]
    out = []
    for v in verdicts:
        status = "True" if v.status else "False"
        before = old.get(v.type)
        since = before.last_transition_time if before and before.status == status else now
        out.append(
            Condition(
                type=v.type,
                status=status,
                reason=v.reason,
                message=v.message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out + kept


def changed(previous: list[Condition], current: list[Condition]) -> list[Condition]:
    """Conditions whose status or reason differ from before (to announce as Events)."""
    old = {c.type: (c.status, c.reason) for c in previous}
    return [c for c in current if old.get(c.type) != (c.status, c.reason)]


def invalid_spec(previous: list[Condition], message: str, now: str, generation: int | None):
    """Conditions for a spec that cannot work: Degraded/InvalidSpec, not Ready."""
    return merge(
        previous,
        [
            Verdict(READY, False, "InvalidSpec", message),
            Verdict(PROGRESSING, False, "InvalidSpec", "fix the spec to continue"),
            Verdict(DEGRADED, True, "InvalidSpec", message),
        ],
        now,
        generation,
    )
