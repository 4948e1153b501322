from __future__ import annotations

from crisync.errors import PermanentError
from crisync.handlers.first_objects import (
    REFUSE_AT,
    SPARE,
    FirstObjects,
    OwnFailures,
    Refused,
    failure_signature,
)
from crisync.state.inbox import InboxEvent

PLACEHOLDER = "pure: PUT /research-outputs: no Organization with uuid 00000000-0000"


def event(number: int, kind: str = "publication") -> InboxEvent:
    return InboxEvent(
        number, f"elements:{kind}s", "elements", kind, str(number), "upsert", "t", "t", {}, 0
    )


def placeholder_failure() -> PermanentError:
    return PermanentError(PLACEHOLDER.removeprefix("pure: "), api="pure", status=400)


def test_the_same_failure_on_the_first_objects_is_the_configuration_s() -> None:
    judge = FirstObjects()
    withheld = [judge.failed(event(n), 1, placeholder_failure()) for n in range(REFUSE_AT - 1)]
    assert withheld == [None] * (REFUSE_AT - 1)  # not dead letters
    assert judge.keys() == {f"elements/publication/{n}" for n in range(REFUSE_AT - 1)}
    refused = judge.failed(event(REFUSE_AT - 1), 1, placeholder_failure())
    assert isinstance(refused, Refused)
    assert refused.route == "elements/publication"
    assert refused.reason == (
        f"refused the configuration: {REFUSE_AT} of the first {REFUSE_AT} "
        f"elements/publication objects failed alike: {PLACEHOLDER}"
    )
    assert [w.event.id for w in refused.withheld] == list(range(REFUSE_AT))
    assert judge.keys() == set()
    # The route is judged: a later failure is its object's own.
    later = judge.failed(event(99), 1, placeholder_failure())
    assert isinstance(later, OwnFailures)
    assert [f.event.id for f in later.failures] == [99]


def test_failures_among_objects_that_replicate_are_their_own() -> None:
    judge = FirstObjects()
    assert judge.failed(event(1), 1, placeholder_failure()) is None
    assert judge.failed(event(2), 2, placeholder_failure()) is None
    for n in range(3, 3 + SPARE):
        assert judge.succeeded(event(n)) is None
    spent = judge.succeeded(event(50))
    assert isinstance(spent, OwnFailures)
    assert [(f.event.id, f.attempt) for f in spent.failures] == [(1, 1), (2, 2)]
    assert judge.keys() == set()


def test_each_route_is_judged_on_its_own_and_what_is_left_is_settled_as_the_objects() -> None:
    judge = FirstObjects()
    for n in range(SPARE + 5):
        judge.succeeded(event(n, kind="user"))
    assert judge.failed(event(100), 1, placeholder_failure()) is None  # users do not count
    settled = judge.settle()
    assert [f.event.id for f in settled.failures] == [100]
    assert judge.keys() == set()
    later = judge.failed(event(101), 1, placeholder_failure())
    assert isinstance(later, OwnFailures)


def test_an_object_s_own_uuid_in_the_request_path_does_not_make_failures_differ() -> None:
    first, second = (
        PermanentError(f"PUT /research-outputs/{uuid}: no Organization with uuid o1", api="pure")
        for uuid in ("6f1c2b0e-1d2a-4e3b-9c4d-5e6f7a8b9c0d", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
    )
    assert failure_signature(first.info()) == failure_signature(second.info())
    other_org = PermanentError("PUT /research-outputs: no Organization with uuid o2", api="pure")
    assert failure_signature(first.info()) != failure_signature(other_org.info())
