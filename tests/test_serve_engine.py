"""The serving engine without HTTP: continuous batching gives each request exactly what
``Generator`` gives it alone, and the engine's bounds (slots, queue, cancellation, stop) hold.

The oracle is ``Generator`` on the same Model object, run before the engine starts (the
engine's thread owns the model while it runs). Models: the bundled kjv-tiny (real tokenizer,
so stop strings and text are exercised) in float32 and int8.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest

from fastgpt import Model, Tokenizer
from fastgpt.generate import GenerationConfig, Generator
from fastgpt.sampling import log_softmax
from fastgpt.serving.engine import (Delta, Done, Engine, EngineStopped, Failed, PromptLogprobs,
                                    QueueFull)

#: Seconds any wait on the engine may take before the test fails (the model is tiny).
WAIT = 60.0
#: Prompt tokens per prefill call in these tests: small, so that prompts span several chunks.
CHUNK = 16

LONG_PROMPT = ("And the LORD spake unto Moses, saying, Speak unto the children of Israel, that "
               "they bring me an offering: of every man that giveth it willingly with his heart "
               "ye shall take my offering. And this is the offering which ye shall take of them; "
               "gold, and silver, and brass, and blue, and purple, and scarlet")

# (prompt, options, top_logprobs or None)
CASES = [
    ("And God said", dict(max_new_tokens=40), None),
    ("In the beginning God created", dict(max_new_tokens=30, do_sample=True, temperature=0.9,
                                          top_k=50, seed=1), 3),
    ("The LORD is my shepherd", dict(max_new_tokens=25, do_sample=True, top_p=0.9, seed=2,
                                     num_return_sequences=3), None),
    ("And it came to pass", dict(max_new_tokens=50, stop=[".", ";"]), None),
    ("Jesus wept", dict(max_new_tokens=35, repetition_penalty=1.3, presence_penalty=0.5,
                        frequency_penalty=0.3), 0),
    ("Blessed are", dict(max_new_tokens=20, logit_bias={11: -5.0, 262: 2.0}, min_new_tokens=10), None),
    (LONG_PROMPT, dict(max_new_tokens=30, do_sample=True, min_p=0.1, seed=7), 2),
    ("Then", dict(max_new_tokens=60, no_repeat_ngram_size=2, eos_token_id=[]), None),
    ("Amen", dict(max_new_tokens=0), None),
    (LONG_PROMPT + " and fine linen", dict(max_new_tokens=12, do_sample=True, seed=3,
                                         temperature=1.5, num_return_sequences=2), 1),
]


@pytest.fixture(scope="module", params=["float32", "int8"])
def kjv(request):
    model = Model.from_pretrained("kjv-tiny", dtype=request.param)
    model.prefill_chunk = CHUNK
    return model, Tokenizer.from_pretrained("kjv-tiny")


def reference(model, tok, cases):
    """What Generator gives each case alone: per case, a list of results (one per choice)."""
    gen = Generator(model, tok)
    out = []
    for prompt, options, top in cases:
        config = GenerationConfig(**options)
        res = gen.generate_ids(tok.encode(prompt), config=config, return_result=True,
                               return_logprobs=top is not None, top_logprobs=top or 0)
        out.append(res if isinstance(res, list) else [res])
    return out


class Collector:
    """A request's events, gathered per choice on the engine thread."""

    def __init__(self, on_delta=None):
        self.tokens: dict[int, list[int]] = {}
        self.text: dict[int, str] = {}
        self.logprobs: dict[int, list[float]] = {}
        self.top: dict[int, list[dict]] = {}
        self.finish: dict[int, str] = {}
        self.prompt_scores: list[PromptLogprobs] = []
        self.end: Done | Failed | None = None
        self.ended = threading.Event()
        self.on_delta = on_delta

    def __call__(self, event):
        if isinstance(event, Delta):
            i = event.index
            self.text[i] = self.text.get(i, "") + event.text
            self.tokens.setdefault(i, [])
            if event.token_id is not None:
                self.tokens[i].append(event.token_id)
                if event.logprob is not None:
                    self.logprobs.setdefault(i, []).append(event.logprob)
                if event.top_logprobs is not None:
                    self.top.setdefault(i, []).append(event.top_logprobs)
            if event.finish_reason:
                self.finish[i] = event.finish_reason
            if self.on_delta:
                self.on_delta(event)
        elif isinstance(event, PromptLogprobs):
            self.prompt_scores.append(event)
        else:
            self.end = event
            self.ended.set()

    def wait(self):
        assert self.ended.wait(WAIT), "the request did not end"
        return self.end


@contextlib.contextmanager
def running(engine):
    """The engine, started; stopped (its thread joined) however the test ends."""
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


def first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_against(ref_results, got: Collector, label: str):
    assert isinstance(got.end, Done), f"{label}: ended with {got.end}"
    for j, ref in enumerate(ref_results):
        tokens = got.tokens.get(j, [])
        i = first_difference(tokens, ref.token_ids)
        assert tokens == ref.token_ids, (
            f"{label} choice {j}: first difference at token {i}: engine {tokens[i:i + 5]} vs "
            f"Generator {ref.token_ids[i:i + 5]} (lengths {len(tokens)}, {len(ref.token_ids)})")
        assert got.text.get(j, "") == ref.text, f"{label} choice {j}: text differs"
        assert got.finish[j] == ref.finish_reason, f"{label} choice {j}: finish reason"
        if ref.logprobs is not None:
            assert got.logprobs[j] == ref.logprobs, f"{label} choice {j}: logprobs differ"
        if ref.top_logprobs is not None:
            assert got.top[j] == ref.top_logprobs, f"{label} choice {j}: top logprobs differ"
    n_generated = sum(len(r.token_ids) for r in ref_results)
    assert got.end.completion_tokens == n_generated


def submit(engine, tok, case, sink):
    prompt, options, top = case
    return engine.submit([tok.encode(prompt)], GenerationConfig(**options), top_logprobs=top, sink=sink)


def test_requests_joining_and_leaving_get_what_they_get_alone(kjv, monkeypatch):
    """10 requests (13 sequences) through 4 slots: they queue, join while others decode,
    prefill in chunks or in pieces inside the decode steps, and leave at different steps."""
    model, tok = kjv
    refs = reference(model, tok, CASES)
    steps = []                                  # tokens per row of every mixed step
    forward_rows = model.forward_rows
    monkeypatch.setattr(model, "forward_rows", lambda ids, *a, **k: steps.append([len(i) for i in ids])
                        or forward_rows(ids, *a, **k))
    with running(Engine(model, tok, max_batch=4)) as engine:
        first_wave = len(CASES) // 2
        started = threading.Event()
        collectors = [Collector(on_delta=lambda ev: started.set() if ev.token_id is not None else None)
                      if i == 0 else Collector() for i in range(len(CASES))]
        for i in range(first_wave):
            submit(engine, tok, CASES[i], collectors[i])
        assert started.wait(WAIT)                   # the rest joins a running batch
        for i in range(first_wave, len(CASES)):
            submit(engine, tok, CASES[i], collectors[i])
        for i, (ref, got) in enumerate(zip(refs, collectors)):
            got.wait()
            check_against(ref, got, f"case {i} ({CASES[i][0][:20]!r}, {CASES[i][1]})")
        stats = engine.stats()
        assert (stats.running, stats.waiting, stats.rows_busy) == (0, 0, 0), stats
    assert any(1 in rows and max(rows) > 1 for rows in steps), f"no prompt went in beside decoding rows: {steps}"


def test_a_burst_of_short_prompts_starts_decoding_together(kjv):
    """Short prompts waiting together go in within one step (the decode call's pieces, then
    fused calls of their own, within the step's prefill budget), not a piece per step: every
    stream has its first token from the same step. Each still gets what it gets alone."""
    model, tok = kjv
    cases = [(LONG_PROMPT[:60 + 9 * i], dict(max_new_tokens=5), None) for i in range(6)]
    refs = reference(model, tok, cases)
    lengths = [len(tok.encode(prompt)) for prompt, _, _ in cases]
    engine = Engine(model, tok, max_batch=len(cases))
    engine.prefill_chunk = 64                   # this engine's budget: 4 x 64 prompt tokens a step
    assert engine.step_tokens < sum(lengths) <= 4 * engine.prefill_chunk, lengths
    first_step = {}

    def collector(i):
        return Collector(on_delta=lambda ev: first_step.setdefault(i, engine.stats().steps))

    with running(engine):
        cols = [collector(i) for i in range(len(cases))]
        with engine._cond:                      # all waiting when the engine takes its next step
            for case, col in zip(cases, cols):
                submit(engine, tok, case, col)
        for i, (ref, got) in enumerate(zip(refs, cols)):
            got.wait()
            check_against(ref, got, f"case {i}")
    assert len(set(first_step.values())) == 1, f"first tokens came at steps {first_step}"


def test_the_batch_really_runs_together(kjv):
    """Several sequences decode in the same steps: far fewer steps than tokens."""
    model, tok = kjv
    with running(Engine(model, tok, max_batch=8)) as engine:
        cols = [Collector() for _ in range(8)]
        before = engine.stats().steps
        for i, c in enumerate(cols):
            engine.submit([tok.encode(f"And {i}")], GenerationConfig(max_new_tokens=30, eos_token_id=[]),
                          sink=c)
        for c in cols:
            assert isinstance(c.wait(), Done)
        steps = engine.stats().steps - before
        assert steps < 2 * 30, f"8 requests of 30 tokens took {steps} steps"


def test_cancel_frees_the_row_at_the_next_step(kjv):
    model, tok = kjv
    with running(Engine(model, tok, max_batch=2)) as engine:
        seen = {}

        def on_delta(event):                        # on the engine thread, inside a step
            if len(col.tokens[0]) == 5:
                seen["step"] = engine.stats().steps
                engine.cancel(request)

        col = Collector(on_delta)
        request = engine.submit([tok.encode("And God said")],
                                GenerationConfig(max_new_tokens=200, eos_token_id=[]), sink=col)
        end = col.wait()
        assert isinstance(end, Failed) and end.reason == "cancelled", end
        assert len(col.tokens[0]) <= 6                 # at most the step that was running
        deadline = time.monotonic() + WAIT
        while engine.stats().rows_busy and time.monotonic() < deadline:
            time.sleep(0.001)
        assert engine.stats().rows_busy == 0
        assert engine.stats().steps <= seen["step"] + 2
        engine.cancel(request)                          # harmless once ended


def test_cancel_during_prefill(kjv, monkeypatch):
    """A prompt of many pieces (prefill chunks, or pieces beside the decode steps), cancelled
    after its first: nothing more of it goes in after that step, no token, row freed."""
    model, tok = kjv
    engine = Engine(model, tok, max_batch=1)
    ids = tok.encode(LONG_PROMPT * 3)[: model.config.n_positions - 8]
    assert len(ids) > 2 * max(CHUNK, model.max_fused_tokens)
    pieces_done = []

    def counting(forward, tokens_of):
        def run(step_ids, *args, **kwargs):       # cancel after the first piece of the prompt
            out = forward(step_ids, *args, **kwargs)
            pieces_done.append((engine.stats().steps, tokens_of(step_ids)))
            if len(pieces_done) == 1:
                engine.cancel(request)
            return out
        return run

    monkeypatch.setattr(model, "forward", counting(model.forward, lambda ids: np.shape(ids)[-1]))
    monkeypatch.setattr(model, "forward_rows", counting(model.forward_rows, lambda ids: sum(map(len, ids))))
    engine.start()
    try:
        col = Collector()
        request = engine.submit([ids], GenerationConfig(max_new_tokens=5), sink=col)
        end = col.wait()
        assert isinstance(end, Failed) and end.reason == "cancelled"
        steps = {step for step, _ in pieces_done}
        assert col.tokens == {} and len(steps) == 1 and sum(t for _, t in pieces_done) < len(ids), pieces_done
        # The freed row serves the next request, from an empty cache row.
        after = Collector()
        engine.submit([tok.encode("And God said")], GenerationConfig(max_new_tokens=10), sink=after)
        after.wait()
    finally:
        engine.stop()
        monkeypatch.undo()
    refs = reference(model, tok, [("And God said", dict(max_new_tokens=10), None)])
    check_against(refs[0], after, "after a cancelled prefill")


def test_max_batch_past_memory_is_refused_before_allocating(kjv):
    from fastgpt.memory import MemoryLimitError

    model, tok = kjv
    with pytest.raises(MemoryLimitError, match="max_batch=100000000"):
        Engine(model, tok, max_batch=10**8)


def test_queue_bound_refuses_at_once(kjv):
    model, tok = kjv
    engine = Engine(model, tok, max_batch=1, max_queue=1).start()
    release = threading.Event()
    try:
        def hold(event):                            # stalls the engine thread in its first step
            release.wait(WAIT)

        busy = Collector(hold)
        engine.submit([tok.encode("And")], GenerationConfig(max_new_tokens=3), sink=busy)
        deadline = time.monotonic() + WAIT
        while engine.stats().rows_busy == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        queued = Collector()
        engine.submit([tok.encode("God")], GenerationConfig(max_new_tokens=3), sink=queued)
        assert engine.stats().waiting == 1
        with pytest.raises(QueueFull, match="queue is full") as info:
            engine.submit([tok.encode("said")], GenerationConfig(max_new_tokens=3))
        assert info.value.retry_after > 0
        release.set()
        assert isinstance(busy.wait(), Done) and isinstance(queued.wait(), Done)
        # Served normally afterwards.
        again = Collector()
        engine.submit([tok.encode("said")], GenerationConfig(max_new_tokens=3), sink=again)
        assert isinstance(again.wait(), Done)
    finally:
        release.set()
        engine.stop()


def test_stop_ends_running_and_waiting_requests(kjv):
    model, tok = kjv
    engine = Engine(model, tok, max_batch=1).start()
    active, queued = Collector(), Collector()
    go = threading.Event()
    active.on_delta = lambda event: go.set()
    engine.submit([tok.encode("And")], GenerationConfig(max_new_tokens=250 - 2, eos_token_id=[]), sink=active)
    engine.submit([tok.encode("God")], GenerationConfig(max_new_tokens=5), sink=queued)
    assert go.wait(WAIT)
    engine.stop()
    for col in (active, queued):
        end = col.wait()
        assert isinstance(end, Failed) and end.reason == "shutdown", end
    assert not engine.ready
    with pytest.raises(EngineStopped):
        engine.submit([tok.encode("said")], GenerationConfig(max_new_tokens=1))


def test_bad_requests_fail_at_submit_naming_the_problem(kjv):
    model, tok = kjv
    with running(Engine(model, tok, max_batch=2, max_tokens=100)) as engine:
        with pytest.raises(ValueError, match="max_tokens"):
            engine.submit([[1, 2]], GenerationConfig(max_new_tokens=101))
        with pytest.raises(ValueError, match=r"prompt\[1\].*n_positions=256"):
            engine.submit([[1, 2], [1] * 250], GenerationConfig(max_new_tokens=10))
        with pytest.raises(ValueError, match="outside the vocabulary"):
            engine.submit([[1, 99999]], GenerationConfig(max_new_tokens=1))
        with pytest.raises(ValueError, match="logit_bias"):
            engine.submit([[1]], GenerationConfig(max_new_tokens=1, logit_bias={5000: 1.0}))
        with pytest.raises(ValueError, match="prompt"):
            engine.submit([], GenerationConfig(max_new_tokens=1))
        with pytest.raises(ValueError, match="`n` \\(3\\) must be at most this server's 2 slots"):
            engine.submit([[1]], GenerationConfig(max_new_tokens=1, do_sample=True, num_return_sequences=3))
        assert engine.stats().waiting == 0
    with pytest.raises(ValueError, match="max_batch"):
        Engine(model, tok, max_batch=0)


def test_echo_scores_the_prompt_like_a_full_forward(kjv):
    """Prompt log-probabilities (echo) are log_softmax of a cacheless forward's logits."""
    model, tok = kjv
    ids = tok.encode("In the beginning God created the heaven")
    expected = log_softmax(model.forward(ids[:-1]))                     # (P-1, V)
    with running(Engine(model, tok)) as engine:
        col = Collector()
        engine.submit([ids], GenerationConfig(max_new_tokens=0), top_logprobs=2, prompt_logprobs=True,
                      sink=col)
        assert isinstance(col.wait(), Done)
    (scores,) = col.prompt_scores
    assert scores.logprobs[0] is None and scores.top_logprobs[0] is None
    want = expected[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_array_equal(np.array(scores.logprobs[1:]), want)
    for row, top in zip(expected, scores.top_logprobs[1:]):
        best = np.argsort(-row, kind="stable")[:2]
        assert list(top) == best.tolist()
    assert col.finish == {0: "length"} and col.tokens == {0: []}


@pytest.mark.parametrize("kv_dtype", ["float16", "bfloat16"])
def test_serve_kv_dtype_flag_builds_the_engine_on_that_cache(kv_dtype):
    """``fastgpt serve --kv-dtype`` reaches the engine's cache, and a request gets what Generator
    gives on a model with the same KV cache dtype (not the float32 cache's tokens)."""
    from fastgpt.serving.serve import build_engine, serve_parser

    # float32 weights: their default cache is float32, so a 16-bit cache comes from the flag alone
    args = serve_parser().parse_args(["--model", "kjv-tiny", "--dtype", "float32", "--threads", "1",
                                      "--kv-dtype", kv_dtype, "--prefill-chunk", str(CHUNK)])
    engine = build_engine(args)
    assert engine.model.kv_dtype == kv_dtype
    assert engine._cache.kv_dtype == kv_dtype
    tok = Tokenizer.from_pretrained("kjv-tiny")
    oracle = Model.from_pretrained("kjv-tiny", dtype="float32", num_threads=1, kv_dtype=kv_dtype)
    oracle.prefill_chunk = CHUNK
    case = (LONG_PROMPT, dict(max_new_tokens=40), None)
    want = reference(oracle, tok, [case])[0]
    with running(engine):
        got = Collector()
        submit(engine, tok, case, got)
        got.wait()
    check_against(want, got, f"--kv-dtype {kv_dtype}")
