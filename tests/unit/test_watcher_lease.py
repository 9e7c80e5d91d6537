"""Who may act among watchers on several hosts (watchers/hubs/lease.py) and what a host's
agent lets through (watchers/hubs/agent.py): the pure rules, with a scripted store."""

import pytest

from hubkeeper.watchers.hubs.agent import FencingGate, Refused, admits
from hubkeeper.watchers.hubs.lease import (
    LeaseKeeper,
    LeaseLost,
    LeaseStoreError,
    trusted_lease,
)


class ScriptedStore:
    """Answers acquire() from a script: a generation, None (another holder) or an error."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.released: list[tuple[str, int]] = []

    def acquire(self, holder: str, ttl: float) -> int | None:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    def release(self, holder: str, generation: int) -> None:
        self.released.append((holder, generation))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def keeper(*answers: object) -> tuple[LeaseKeeper, Clock, ScriptedStore]:
    clock, store = Clock(), ScriptedStore(*answers)
    return LeaseKeeper(store, ttl=4.0, holder="w1", clock=clock), clock, store  # type: ignore[arg-type]


def test_a_lease_is_trusted_for_three_quarters_of_its_life_from_when_it_was_asked_for() -> None:
    lease = trusted_lease(7, sent_at=10.0, ttl=4.0)
    assert lease.generation == 7
    assert lease.valid(12.99) and not lease.valid(13.0)


def test_the_holder_leads_and_acts_with_the_generation_as_its_token() -> None:
    lease, _, _ = keeper(3)
    assert not lease.leading()
    lease.renew()
    assert lease.leading() and lease.token() == 3


def test_another_holder_means_no_lease_and_no_action() -> None:
    lease, _, _ = keeper(3, None)
    lease.renew()
    lease.renew()
    assert not lease.leading()
    with pytest.raises(LeaseLost):
        lease.token()


def test_an_unreachable_store_keeps_the_lease_only_until_its_trust_runs_out() -> None:
    lease, clock, _ = keeper(3, LeaseStoreError("refused"))
    lease.renew()
    clock.now += 1.0
    lease.renew()
    assert lease.error == "refused"
    assert lease.leading()  # renewed at 100, trusted until 103
    clock.now = 103.0
    assert not lease.leading()
    with pytest.raises(LeaseLost):
        lease.token()


def test_a_paused_leader_acts_again_only_after_a_renewal_says_it_still_holds_the_lease() -> None:
    lease, clock, _ = keeper(3, 4)
    lease.renew()
    clock.now += 60  # SIGSTOP for a minute
    assert not lease.leading()
    lease.renew()  # meanwhile the lease lapsed and was taken again: a new generation
    assert lease.token() == 4


def test_a_clean_stop_lets_the_lease_lapse_at_once() -> None:
    lease, _, store = keeper(5)
    lease.renew()
    lease.release()
    assert store.released == [("w1", 5)] and not lease.leading()


def test_an_agent_admits_the_newest_token_and_the_same_one_again_but_never_an_older() -> None:
    assert admits(highest=4, token=4) and admits(highest=4, token=5)
    assert not admits(highest=4, token=3)


def test_the_gate_remembers_the_highest_token_across_restarts(tmp_path) -> None:
    gate = FencingGate(tmp_path / "token")
    assert gate.highest() == 0
    with gate.admit(6):
        pass
    restarted = FencingGate(tmp_path / "token")
    assert restarted.highest() == 6
    with pytest.raises(Refused, match="fencing token 5 is older than 6"), restarted.admit(5):
        pytest.fail("a stale request must not run")
    with restarted.admit(6):
        pass
