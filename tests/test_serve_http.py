"""``fastgpt serve`` over real HTTP: OpenAI's shapes, streaming, errors, metrics, shutdown.

A real uvicorn process (tests/server_process.py) serves the bundled kjv-tiny on 127.0.0.1;
the oracle is ``Generator`` on the same checkpoint, dtype, threads and prefill chunk in this
process. Token ids come back through vLLM's ``return_tokens_as_token_ids``.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from server_process import ServerProcess, metric, require_serve

require_serve("openai")

from fastgpt import Model, Tokenizer  # noqa: E402
from fastgpt.generate import Generator  # noqa: E402
from fastgpt.serving.bench import get, post  # noqa: E402

THREADS = 1
CHUNK = 16
#: Seconds any one HTTP exchange may take.
TIMEOUT = 60.0
SERVER_ARGS = ["--model", "kjv-tiny", "--threads", str(THREADS), "--max-batch", "4",
               "--prefill-chunk", str(CHUNK)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(SERVER_ARGS, tmp_path_factory.mktemp("serve") / "server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def oracle():
    model = Model.from_pretrained("kjv-tiny", num_threads=THREADS)
    model.prefill_chunk = CHUNK
    tok = Tokenizer.from_pretrained("kjv-tiny")
    return Generator(model, tok), tok


def completion(server, **body):
    reply = post(server.url, "/v1/completions", {"model": "kjv-tiny", **body}, timeout=TIMEOUT)
    assert reply.status == 200, reply.body
    return reply


def ids_of(logprobs) -> list[int]:
    return [int(t.removeprefix("token_id:")) for t in logprobs["tokens"]]


def test_openai_client_snippet_streams_what_generator_samples(server, oracle):
    from openai import OpenAI

    gen, tok = oracle
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=TIMEOUT)
    pieces = []
    for chunk in client.completions.create(model="kjv-tiny", prompt="And God said", max_tokens=40,
                                           temperature=0.8, seed=1, stream=True):
        pieces.append(chunk.choices[0].text)
    want = gen.generate("And God said", max_new_tokens=40, do_sample=True, temperature=0.8, seed=1)
    assert "".join(pieces) == want
    assert len(pieces) == 40                     # one chunk per token
    whole = client.completions.create(model="kjv-tiny", prompt="And God said", max_tokens=40,
                                      temperature=0.8, seed=1)
    assert whole.choices[0].text == want and whole.usage.completion_tokens == 40
    assert whole.usage.prompt_tokens == len(tok.encode("And God said"))


def test_greedy_batch_of_prompts_matches_generator_with_logprobs(server, oracle):
    gen, tok = oracle
    prompts = ["In the beginning", "And the LORD spake unto Moses, saying, Speak unto the children "
                                   "of Israel, that they bring me an offering", "Amen"]
    reply = completion(server, prompt=prompts, temperature=0, max_tokens=24, logprobs=3,
                       return_tokens_as_token_ids=True)
    body = reply.body
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    total = 0
    for prompt, choice in zip(prompts, body["choices"]):
        want = gen.generate_ids(tok.encode(prompt), max_new_tokens=24, return_logprobs=True,
                                top_logprobs=3)
        lp = choice["logprobs"]
        assert ids_of(lp) == want.token_ids
        assert lp["token_logprobs"] == want.logprobs
        for tops, ref_top, tid, tlp in zip(lp["top_logprobs"], want.top_logprobs, want.token_ids,
                                           want.logprobs):
            expected = {f"token_id:{k}": v for k, v in ref_top.items()}
            expected.setdefault(f"token_id:{tid}", tlp)        # OpenAI: the chosen one too
            assert tops == expected
        assert choice["text"] == want.text
        assert choice["finish_reason"] == ("length" if want.finish_reason == "length" else "stop")
        offsets = lp["text_offset"]
        assert offsets == sorted(offsets) and offsets[0] == 0
        total += len(want.token_ids)
    assert body["usage"] == {"prompt_tokens": sum(len(tok.encode(p)) for p in prompts),
                             "completion_tokens": total,
                             "total_tokens": total + sum(len(tok.encode(p)) for p in prompts)}


def test_prompt_forms_and_n_choices(server, oracle):
    gen, tok = oracle
    a, b = tok.encode("And Moses said"), tok.encode("Then Jesus")
    options = dict(temperature=0.9, top_p=0.95, top_k=30, seed=11, n=2, max_tokens=12)
    for prompt in ([a, b], ["And Moses said", "Then Jesus"]):
        body = completion(server, prompt=prompt, **options).body
        texts = [c["text"] for c in sorted(body["choices"], key=lambda c: c["index"])]
        want = []
        for ids in (a, b):                         # each prompt is seeded as alone with n=2
            want += gen.generate_ids(ids, max_new_tokens=12, do_sample=True, temperature=0.9,
                                     top_p=0.95, top_k=30, seed=11, num_return_sequences=2,
                                     return_result=True)
        assert texts == [w.text for w in want]
    single = completion(server, prompt=a, temperature=0, max_tokens=5).body
    assert single["choices"][0]["text"] == gen.generate_ids(a, max_new_tokens=5, return_result=True).text


def test_echo_with_logprobs_scores_the_prompt(server, oracle):
    gen, tok = oracle
    prompt = "And God saw the light"
    body = completion(server, prompt=prompt, echo=True, logprobs=1, max_tokens=3, temperature=0,
                      return_tokens_as_token_ids=True).body
    choice = body["choices"][0]
    want = gen.generate(prompt, max_new_tokens=3)
    assert choice["text"] == prompt + want
    lp = choice["logprobs"]
    ids = tok.encode(prompt)
    assert ids_of(lp)[: len(ids)] == ids and len(lp["tokens"]) == len(ids) + 3
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(isinstance(x, float) and x <= 0 for x in lp["token_logprobs"][1:])
    assert lp["text_offset"][len(ids)] == len(prompt)


def test_echo_offsets_count_characters_not_byte_tokens(server, oracle):
    _, tok = oracle
    prompt = "\u00e9 and \U0001f600 then"                 # characters that span several tokens
    ids = tok.encode(prompt)
    body = completion(server, prompt=prompt, echo=True, logprobs=0, max_tokens=2, temperature=0).body
    offsets = body["choices"][0]["logprobs"]["text_offset"]
    # the oracle: where each token's character starts, from the text of the tokens before it
    want = [len(tok.decode_bytes(ids[:i]).decode("utf-8", errors="ignore")) for i in range(len(ids))]
    assert offsets[: len(ids)] == want
    assert offsets[len(ids)] == len(prompt) and offsets == sorted(offsets)


def test_sse_stream_shape(server, oracle):
    gen, _ = oracle
    reply = completion(server, prompt="Blessed are the", max_tokens=20, temperature=0, stream=True,
                       stream_options={"include_usage": True})
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.done, "no data: [DONE]"
    events = [e for _, e in reply.events]
    *chunks, last = events
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == len(chunks) == 20
    assert all(c["usage"] is None and c["object"] == "text_completion" for c in chunks)
    assert len({c["id"] for c in events}) == 1
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 19 + ["length"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == gen.generate("Blessed are the",
                                                                            max_new_tokens=20)


def test_stop_strings_and_finish_reasons(server, oracle):
    gen, tok = oracle
    full = gen.generate("And it came to pass", max_new_tokens=40)
    stop = full[5:8]
    body = completion(server, prompt="And it came to pass", max_tokens=40, temperature=0, stop=[stop]).body
    choice = body["choices"][0]
    assert choice["text"] == full[: full.index(stop)] and choice["finish_reason"] == "stop"
    eos = tok.eos_token_id
    body = completion(server, prompt="Amen", max_tokens=10, temperature=0, logit_bias={str(eos): 100}).body
    assert body["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}
    assert body["usage"]["completion_tokens"] == 1          # the EOS token counts
    body = completion(server, prompt="Amen", max_tokens=10, temperature=0, min_tokens=4, ignore_eos=True,
                      logit_bias={str(eos): 100}).body
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 10


@pytest.mark.parametrize("payload,status,param", [
    (b'{"prompt": "x"', 400, None),                                   # malformed JSON
    (b"\xff\xfe", 400, None),                                         # not even text
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "x", "max_tokens": -3}, 400, "max_tokens"),
    ({"prompt": "x", "n": 2, "temperature": 0}, 400, "n"),
    ({"prompt": "x", "n": 5, "temperature": 1}, 400, "n"),                 # more than the slots
    ({"prompt": "x", "logit_bias": {"99999": 1}}, 400, "logit_bias"),
    ({"prompt": [5, 99999]}, 400, "prompt"),
    ({"prompt": "And " * 300, "max_tokens": 8}, 400, "prompt"),       # over-long
    ({"prompt": "And " * 300, "max_tokens": None}, 400, "prompt"),    # over-long, no max_tokens
    ({"prompt": "And God said unto Moses", "max_tokens": 255}, 400, "prompt"),  # with max_tokens
    ({"prompt": "x", "max_tokens": 300}, 400, "max_tokens"),          # past the server's cap
    ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
    (b'{"prompt": "\\ud800", "echo": true, "max_tokens": 1}', 400, "prompt"),   # a lone surrogate
    (b'{"prompt": "x", "model": "\\udfff"}', 400, "model"),
    (b'{"prompt": "x", "logit_bias": {"\\ud800": 1}}', 400, "logit_bias"),
    (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, None),   # nested too deeply
    (b'{"prompt": ' + b"[" * 950 + b'"\\ud800"' + b"]" * 950 + b"}", 400, "prompt" + "[0]" * 950),  # deep
    ({"prompt": "And God said", "max_tokens": None, "min_tokens": 300}, 400, "min_tokens"),
    # sampling overflows on the request's own penalty (repeated tokens' logits / 1e-40)
    ({"prompt": "Amen Amen Amen", "max_tokens": 2, "temperature": 1, "seed": 1,
      "repetition_penalty": 1e-40}, 400, None),
])
def test_client_mistakes_get_4xx_naming_the_field(server, payload, status, param):
    if isinstance(payload, dict):
        payload = {"model": "kjv-tiny", **payload}
    reply = post(server.url, "/v1/completions", payload, timeout=TIMEOUT)
    assert reply.status == status, reply.body
    err = reply.body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param, err
    if status == 400 and param == "prompt" and "context" in err["message"]:
        assert err["code"] == "context_length_exceeded"


def test_chat_unknown_routes_and_methods_answer_in_openai_shape(server):
    reply = post(server.url, "/v1/chat/completions", {"model": "kjv-tiny", "messages": []})
    assert reply.status == 400 and "/v1/completions" in reply.body["error"]["message"]
    code, text = get(server.url, "/v1/nothing")
    assert code == 404 and "error" in json.loads(text)
    code, text = get(server.url, "/v1/completions")
    assert code == 405 and "error" in json.loads(text)


def test_unknown_fields_are_ignored_with_a_warning(server):
    reply = completion(server, prompt="x", max_tokens=2, temperature=0, frobnicate=True)
    assert reply.status == 200
    deadline = time.monotonic() + TIMEOUT
    while "frobnicate" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ignored: ['frobnicate']" in server.log()


def test_models_health_tokenize_detokenize(server, oracle):
    _, tok = oracle
    code, text = get(server.url, "/v1/models")
    card = json.loads(text)["data"][0]
    assert code == 200 and card["id"] == "kjv-tiny" and card["max_model_len"] == 256
    assert get(server.url, "/health") == (200, '{"status":"ok"}')
    reply = post(server.url, "/tokenize", {"prompt": "And God said<|endoftext|>"})
    assert reply.body["tokens"] == tok.encode("And God said<|endoftext|>", "all")
    assert reply.body["count"] == len(reply.body["tokens"])
    back = post(server.url, "/detokenize", {"tokens": reply.body["tokens"]})
    assert back.body == {"prompt": "And God said<|endoftext|>"}
    bad = post(server.url, "/detokenize", {"tokens": [1, 4096]})
    assert bad.status == 400 and bad.body["error"]["param"] == "tokens[1]"


def test_disconnect_cancels_and_metrics_settle(server):
    before = metric(get(server.url, "/metrics")[1], "fastgpt_requests_finished_total",
                    finished_reason="cancelled") if "cancelled" in get(server.url, "/metrics")[1] else 0
    reply = post(server.url, "/v1/completions",
                 {"prompt": ["And"] * 40, "max_tokens": 250, "temperature": 1.0, "stream": True,
                  "ignore_eos": True}, timeout=TIMEOUT, hang_up=lambda events: len(events) >= 3)
    assert reply.closed_early
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        text = get(server.url, "/metrics")[1]
        if ('finished_reason="cancelled"' in text
                and metric(text, "fastgpt_requests_finished_total", finished_reason="cancelled") > before
                and metric(text, "fastgpt_slots_busy") == 0):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the disconnected request was not cancelled:\n{text}")
    assert metric(text, "fastgpt_requests_running") == 0
    assert metric(text, "fastgpt_requests_waiting") == 0
    assert metric(text, "fastgpt_slots_total") == 4
    assert metric(text, "fastgpt_generation_tokens_total") > 0
    assert metric(text, "fastgpt_time_to_first_token_seconds_count") > 0
    assert metric(text, "fastgpt_inter_token_latency_seconds_count") > 0
    assert metric(text, "fastgpt_e2e_request_latency_seconds_count") > 0


def test_sigterm_ends_running_streams_with_an_error_event(tmp_path):
    """A request of 40 prompts x 250 tokens through 2 slots runs for seconds; SIGTERM ends it."""
    with ServerProcess(["--model", "kjv-tiny", "--max-batch", "2"], tmp_path / "server.log") as srv:
        import threading

        got = {}
        t = threading.Thread(target=lambda: got.setdefault("reply", post(
            srv.url, "/v1/completions", {"prompt": ["And"] * 40, "max_tokens": 250, "temperature": 1.0,
                                         "stream": True, "ignore_eos": True}, timeout=TIMEOUT)))
        t.start()
        deadline = time.monotonic() + TIMEOUT
        while 'fastgpt_slots_busy 2.0' not in get(srv.url, "/metrics")[1] and time.monotonic() < deadline:
            time.sleep(0.02)
        srv.signal(signal.SIGTERM)
        status = srv.proc.wait(TIMEOUT)
        t.join(TIMEOUT)
        reply = got["reply"]
        assert reply.status == 200 and reply.done, "the stream did not end with [DONE]"
        last = reply.events[-1][1]
        assert last["error"]["message"] == "the server is shutting down", last
        assert status in (0, -signal.SIGTERM, 128 + signal.SIGTERM), srv.log()
        assert "Finished server process" in srv.log()


def test_bench_serve_drives_the_server(server, tmp_path, capsys):
    from fastgpt.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench-serve", "--url", server.url, "--clients", "1,2", "--requests", "2",
                 "--prompt-tokens", "8", "--new-tokens", "5", "--rounds", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["clients"] for row in report["levels"]] == [1, 2]
    for row in report["levels"]:
        (run,) = row["rounds"]
        assert run["tokens"] == 2 * 5 and run["tokens_per_s"] > 0
        assert 0 < run["ttft_p50"] <= run["ttft_p99"] and 0 < run["itl_p50"] <= run["itl_p99"]
    assert report["levels"][0]["speedup"] == 1.0
    table = capsys.readouterr().out
    assert "| clients | aggregate tokens/s |" in table and "| 2 |" in table
