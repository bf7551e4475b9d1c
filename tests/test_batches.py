"""Issue 20, point 4: the calls of one batch run side by side, each in its own transaction."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.support import Rpc


def _call(index: int, method: str, params: dict[str, object] | None = None) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": index, "method": method, "params": params or {}}


def test_a_batch_runs_its_calls_side_by_side_and_answers_in_request_order(probe: Rpc) -> None:
    # Five 0.4 s calls (the probe server's pool of 10 runs five of a batch at once).
    batch = [_call(i, "probe.sleep", {"seconds": 0.4}) for i in range(5)]
    started = time.monotonic()
    response = probe.post(batch)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert [reply["id"] for reply in response.json()] == [0, 1, 2, 3, 4]
    assert elapsed < 1.5, f"five 0.4 s calls took {elapsed:.2f} s: they ran one after another"


def test_a_batch_is_bounded_to_half_the_pool(probe: Rpc) -> None:
    batch = [_call(i, "probe.sleep", {"seconds": 0.3}) for i in range(10)]
    started = time.monotonic()
    replies = probe.post(batch).json()
    elapsed = time.monotonic() - started
    assert all(reply.get("result") == {"ok": True} for reply in replies)
    assert elapsed >= 0.55, f"ten 0.3 s calls in {elapsed:.2f} s: more than five ran at once"


def test_each_call_of_a_concurrent_batch_has_its_own_transaction(probe: Rpc) -> None:
    replies = probe.post([_call(i, "probe.transaction") for i in range(8)]).json()
    assert [reply["id"] for reply in replies] == list(range(8))
    assert len({reply["result"]["transactionId"] for reply in replies}) == 8


def test_a_failing_call_does_not_stop_its_batch_neighbours(probe: Rpc) -> None:
    batch = [_call(0, "probe.sleep", {"seconds": 0.1}), _call(1, "probe.broken"), _call(2, "nope")]
    replies = probe.post(batch).json()
    assert replies[0]["result"] == {"ok": True}
    assert replies[1]["error"]["code"] == -32603
    assert replies[2]["error"]["code"] == -32601


def test_a_batch_of_fifty_leaves_connections_to_other_callers(probe: Rpc) -> None:
    # Fifty 0.25 s calls take 2.5 s five at a time; meanwhile another caller's call is
    # answered at once, from the half of the pool the batch cannot take (had the batch every
    # connection, the call would wait about 0.2 s for one).
    batch = [_call(i, "probe.sleep", {"seconds": 0.25}) for i in range(50)]
    with ThreadPoolExecutor(1) as executor:
        running = executor.submit(probe.post, batch)
        time.sleep(0.05)
        other = Rpc(probe.base_url)
        started = time.monotonic()
        reply = other.post(_call(1, "probe.sleep", {"seconds": 0.0})).json()
        waited = time.monotonic() - started
        assert not running.done(), "the batch ended before the other call: nothing was measured"
        replies = running.result().json()
    assert reply["result"] == {"ok": True}
    assert waited < 0.12, f"another caller waited {waited:.2f} s behind a batch of 50"
    assert [r["id"] for r in replies] == list(range(50))
    assert all(r.get("result") == {"ok": True} for r in replies)
