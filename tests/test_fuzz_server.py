"""A bounded sample of the decoder fuzz cases (tests/fuzz_cases.py) against a real server, over
gRPC, interleaved with good requests: each bad upload gets INVALID_ARGUMENT with the sentence
the decoder gives in-process, each upload the decoder accepts is transcribed, every good one
is transcribed right, and the server stays ready with the same stub processes."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
import tritonclient.utils

import fuzz_cases
from corpus import JFK
from fuzz_cases import sentence_problems
from raw_triton import transcribe_async
from whisper_service.accuracy import wer
from whisper_service.errors import InvalidInputError
from whisper_service.options import DecodeOptions, Limits
from whisper_service.pipeline import Pipeline

pytestmark = [pytest.mark.server, pytest.mark.timeout(900)]
SAMPLE_SIZE = 30
GOOD_EVERY = 6  # one good request after every this many fuzz cases
INVALID = "StatusCode.INVALID_ARGUMENT"


def _expected(case: fuzz_cases.Case):
    """What the front model must answer: the in-process refusal message, or None (accepted)."""
    try:
        Pipeline(Limits(), 80).prepare(case.data, DecodeOptions())
    except InvalidInputError as exc:
        return str(exc)
    return None


def _stub_pids(server):
    return sorted(server.managed.stub_pids()) if server.managed is not None else None


def test_fuzz_sample_is_refused_in_sentences_among_good_requests(triton_server):
    cases = fuzz_cases.sample(SAMPLE_SIZE)
    expected = [_expected(case) for case in cases]
    assert sum(message is not None for message in expected) >= SAMPLE_SIZE // 2
    good = JFK.read_bytes()
    order = []  # (case index or None for a good request, audio)
    for index, case in enumerate(cases):
        order.append((index, case.data))
        if index % GOOD_EVERY == GOOD_EVERY - 1:
            order.append((None, good))
    stubs_before = _stub_pids(triton_server)

    async def run_all():
        return await asyncio.gather(
            *(transcribe_async("grpc", triton_server.grpc_url, audio) for _, audio in order),
            return_exceptions=True)

    outcomes = asyncio.run(run_all())
    failures = []
    good_count = 0
    for (index, _), outcome in zip(order, outcomes):
        if index is None:
            good_count += 1
            if not isinstance(outcome, tuple):
                failures.append(f"good request failed: {outcome!r}")
            elif wer(JFK.transcript, outcome[0]) > 0.15:
                failures.append(f"good request misheard: {outcome[0]!r}")
            continue
        case, message = cases[index], expected[index]
        if message is None:
            if not isinstance(outcome, tuple):
                failures.append(f"{case.name}: decodes in-process but the server answered {outcome!r}")
            continue
        if not isinstance(outcome, tritonclient.utils.InferenceServerException):
            failures.append(f"{case.name}: expected INVALID_ARGUMENT, got {outcome!r:.200}")
            continue
        if outcome.status() != INVALID:
            failures.append(f"{case.name}: status {outcome.status()}: {outcome.message()}")
        problems = sentence_problems(outcome.message())
        if problems or message not in outcome.message():
            failures.append(f"{case.name}: {outcome.message()!r} ({problems}; in-process: {message!r})")
    assert good_count >= SAMPLE_SIZE // GOOD_EVERY
    assert not failures, "\n  ".join([f"{len(failures)} problems:"] + failures)

    # Still ready, with the same stubs (none died and was replaced), and still transcribing.
    with urllib.request.urlopen(f"http://{triton_server.http_url}/v2/health/ready") as response:
        assert response.status == 200
    with urllib.request.urlopen(f"http://{triton_server.http_url}/v2/models/whisper/ready") as response:
        assert response.status == 200
    assert _stub_pids(triton_server) == stubs_before
    text, _ = asyncio.run(transcribe_async("grpc", triton_server.grpc_url, good))
    assert wer(JFK.transcript, text) <= 0.15, text
