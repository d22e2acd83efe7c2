"""segserve.dispatch: the batch dispatcher without an idle wait, in-process, and the pin to BentoML's code."""

from __future__ import annotations

import asyncio
import time

from segserve import dispatch

MODEL_SECONDS = 0.2  # long beside the scheduling delays of a loaded machine (tens of ms)


def dispatcher_and_calls():
    calls: list[int] = []

    async def model(batch):
        calls.append(len(batch))
        await asyncio.sleep(MODEL_SECONDS)
        return [x * 10 for x in batch]

    d = dispatch.IdleFirstDispatcher(
        max_latency_in_ms=10_000, max_batch_size=8, fallback=lambda: None, get_batch_size=lambda x: 1
    )
    return d, d(model), calls


def test_the_installed_bentoml_is_the_audited_one():
    """Fails when BentoML's dispatcher or the factory that builds it changes: audit segserve.dispatch again."""
    assert dispatch.source_digests() == dispatch.AUDITED_SOURCES
    assert dispatch.matches_audited()


def test_install_replaces_the_factorys_dispatcher():
    from _bentoml_impl.server import app

    original = app.CorkDispatcher
    try:
        assert dispatch.install() is True
        assert app.CorkDispatcher is dispatch.IdleFirstDispatcher
    finally:
        app.CorkDispatcher = original


def test_a_burst_is_batched_and_answered_in_order():
    async def run():
        d, predict, calls = dispatcher_and_calls()
        answers = await asyncio.gather(*(predict(i) for i in range(17)))
        d.shutdown()
        return answers, calls

    answers, calls = asyncio.run(run())
    assert answers == [i * 10 for i in range(17)]
    # all 17 queue before the dispatcher runs: full batches, then the rest
    assert calls == [8, 8, 1]


def test_requests_that_queue_while_the_model_is_busy_go_in_the_next_batch():
    async def run():
        d, predict, calls = dispatcher_and_calls()
        first = asyncio.ensure_future(predict(0))
        await asyncio.sleep(MODEL_SECONDS / 5)  # the first is running alone now
        rest = await asyncio.gather(*(predict(i) for i in range(1, 6)))
        d.shutdown()
        return [await first, *rest], calls

    answers, calls = asyncio.run(run())
    assert answers == [i * 10 for i in range(6)] and calls == [1, 5]


def test_a_lone_request_after_load_goes_at_once():
    async def run():
        d, predict, calls = dispatcher_and_calls()
        for _ in range(3):  # load: bursts whose requests queue while the model is busy
            await asyncio.gather(*(predict(i) for i in range(16)))
        await asyncio.sleep(0.2)  # idle
        lone = []
        for i in range(5):
            started = time.perf_counter()
            assert await predict(i) == i * 10
            lone.append(time.perf_counter() - started)
        d.shutdown()
        return lone

    lone = asyncio.run(run())
    assert max(lone) < 1.5 * MODEL_SECONDS, lone


def test_a_request_past_max_latency_is_cancelled_to_the_fallback():
    async def run():
        calls = []

        async def model(batch):
            calls.append(len(batch))
            await asyncio.sleep(0.3)
            return list(batch)

        d = dispatch.IdleFirstDispatcher(
            max_latency_in_ms=100, max_batch_size=8, fallback=lambda: "fallback", get_batch_size=lambda x: 1
        )
        predict = d(model)
        first = asyncio.ensure_future(predict(1))
        await asyncio.sleep(0.01)
        second = await predict(2)  # waits behind the busy model past 100 ms: cancelled
        assert await first == 1
        d.shutdown()
        return second, calls

    second, calls = asyncio.run(run())
    assert second == "fallback" and calls == [1]
