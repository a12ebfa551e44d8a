"""`charlm serve` end to end: a real server on a free port, the official openai client, httpx for the rest."""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]

openai = pytest.importorskip("openai")


def cli_sample(run: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "charlm", "sample", str(run), "-q", *args], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def stream_text(client: httpx.Client, body: dict) -> tuple[list[str], list[dict]]:
    """The texts of a streamed completion's choices, and the chunks it came in (ended by [DONE])."""
    texts: dict[int, str] = {}
    chunks = []
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in r.iter_lines() if e]
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        doc = json.loads(e.removeprefix("data: "))
        chunks.append(doc)
        for c in doc["choices"]:
            texts[c["index"]] = texts.get(c["index"], "") + c["text"]
    return [texts.get(i, "") for i in range(len(texts))], chunks


def test_openai_client_streams_and_completes_as_charlm_sample(server, tiny_run: Path) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    model = client.models.list().data[0].id
    assert model == tiny_run.name
    want = cli_sample(tiny_run, "--seed", "3", "--temperature", "0.8", "--prime", "the cat", "--length", "120")
    got = client.completions.create(model=model, prompt="the cat", max_tokens=120, temperature=0.8, seed=3)
    assert got.choices[0].text == want and got.choices[0].finish_reason == "length"
    assert got.usage.completion_tokens == 120 and got.usage.prompt_tokens == 7
    pieces = client.completions.create(
        model=model, prompt="the cat", max_tokens=120, temperature=0.8, seed=3, stream=True
    )
    chunks = list(pieces)
    assert len(chunks) >= 1 and "".join(c.choices[0].text for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason == "length"


def test_a_seed_gives_charlm_samples_text_whatever_shares_the_batch(server, tiny_run: Path) -> None:
    opts = ["--temperature", "0.9", "--top-p", "0.95", "--length", "600"]
    want_one = cli_sample(tiny_run, "--seed", "11", "--prime", "a dog", *opts)
    want_three = cli_sample(tiny_run, "--seed", "12", "--num-samples", "3", "--jsonl", *opts)
    want_three = [json.loads(line)["text"] for line in want_three.splitlines()]
    body = {"max_tokens": 600, "temperature": 0.9, "top_p": 0.95}
    with server.client() as c, cf.ThreadPoolExecutor(12) as pool:
        others = [pool.submit(stream_text, c, {**body, "prompt": "my", "max_tokens": 1500}) for _ in range(8)]
        others += [pool.submit(stream_text, c, {"prompt": "", "max_tokens": 900, "seed": 5, "temperature": 0})]
        one = pool.submit(stream_text, c, {**body, "prompt": "a dog", "seed": 11})
        three = pool.submit(lambda: c.post("/v1/completions", json={**body, "n": 3, "seed": 12}).json())
        assert one.result()[0] == [want_one]
        assert [ch["text"] for ch in sorted(three.result()["choices"], key=lambda ch: ch["index"])] == want_three
        assert all(len(f.result()[0][0]) > 0 for f in others)


def test_stop_logprobs_echo_and_n(server) -> None:
    with server.client() as c:
        r = c.post("/v1/completions", json={"prompt": "the", "max_tokens": 400, "stop": ["."], "n": 2, "seed": 1})
        for ch in r.json()["choices"]:
            assert "." not in ch["text"] and ch["finish_reason"] == "stop"
        doc = c.post("/v1/completions", json={"prompt": "the", "max_tokens": 30, "logprobs": 3, "echo": True}).json()
        ch = doc["choices"][0]
        lp = ch["logprobs"]
        assert ch["text"].startswith("the") and "".join(lp["tokens"]) == ch["text"][3:]
        assert len(lp["token_logprobs"]) == 30 and all(v <= 0 for v in lp["token_logprobs"])
        assert all(len(top) == 3 for top in lp["top_logprobs"]) and lp["text_offset"][0] == 3
        for tok, v, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True):
            assert abs(sum(math.exp(x) for x in top.values())) <= 1 + 1e-9
            assert tok not in top or abs(top[tok] - v) < 1e-9
        texts, chunks = stream_text(
            c, {"prompt": "a", "max_tokens": 50, "n": 2, "stream_options": {"include_usage": True}}
        )
        assert [len(t) for t in texts] == [50, 50] and chunks[-1]["usage"]["completion_tokens"] == 100


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"temperature": NaN}', 400, "temperature"),
        ({"temperature": -0.1}, 400, "temperature"),
        ({"temperature": "hot"}, 400, "temperature"),
        ({"top_p": 0}, 400, "top_p"),
        ({"top_p": 1.5}, 400, "top_p"),
        ({"max_tokens": 2001}, 400, "max_tokens"),
        ({"max_tokens": "10"}, 400, "max_tokens"),
        ({"max_tokens": True}, 400, "max_tokens"),
        ({"n": 5}, 400, "n"),
        ({"n": 4, "max_tokens": 1001}, 400, "max_tokens"),
        ({"seed": 1.5}, 400, "seed"),
        ({"stop": [1]}, 400, "stop"),
        ({"logprobs": 1000}, 400, "logprobs"),
        ({"stream": "yes"}, 400, "stream"),
        ({"frequency_penalty": 0.5}, 400, "frequency_penalty"),
        ({"temprature": 0.5}, 400, "temprature"),
        ({"prompt": 42}, 400, "prompt"),
        ({"prompt": "x" * 301}, 413, "prompt"),
        ({"prompt": "the cat ☃"}, 400, "prompt"),
    ],
)
def test_bad_completions_get_a_4xx_naming_the_field(server, body, status, param) -> None:
    with server.client() as c:
        if isinstance(body, bytes):
            r = c.post("/v1/completions", content=body, headers={"content-type": "application/json"})
        else:
            r = c.post("/v1/completions", json=body)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["param"] == param and err["message"] and err["type"]
        if param:
            assert param in err["message"]
        assert c.get("/health").json()["status"] == "ready"  # still serving


def test_unknown_characters_are_skipped_when_asked(server) -> None:
    with server.client() as c:
        r = c.post("/v1/completions", json={"prompt": "the cat ☃", "max_tokens": 5, "skip_unknown": True})
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 5
        assert c.post("/v1/score", json={"text": "the ☃ cat"}).json()["error"]["param"] == "text"
        assert c.post("/v1/score", json={"text": "the ☃ cat", "skip_unknown": True}).status_code == 200


def test_a_body_over_the_limit_is_413(server) -> None:
    with server.client() as c:
        r = c.post("/v1/score", json={"text": "a" * (3 * 1024 * 1024)})
        assert r.status_code == 413 and "body" in r.json()["error"]["message"]
        assert c.get("/health").status_code == 200


def test_score_and_explain_match_evaluate_and_explain_json(server, tiny_run: Path, tiny_text: str) -> None:
    text = tiny_text[:400]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "charlm", *args], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    Path("t.txt").write_text(text, encoding="utf-8")
    with server.client() as c:
        got = c.post("/v1/score", json={"text": text}).json()
        want = json.loads(cli("evaluate", str(tiny_run), "t.txt", "--json", "-q"))
        assert got["chars"] == want["chars"] and got["bits_per_char"] == pytest.approx(want["bits_per_char"], rel=1e-6)
        lines = text.splitlines()[:5]
        got = c.post("/v1/score", json={"lines": lines}).json()["lines"]
        want = [
            json.loads(x) for x in cli("evaluate", str(tiny_run), "t.txt", "--per-line", "--jsonl", "-q").splitlines()
        ]
        assert [g["text"] for g in got] == lines
        assert [g["bits"] for g in got] == pytest.approx([w["bits"] for w in want[:5]], rel=1e-6)
        got = c.post("/v1/explain", json={"text": text[:80], "top_k": 3}).json()
        want = json.loads(cli("explain", str(tiny_run), "--text", text[:80], "--json", "--top-k", "3", "-q"))
        assert [r["char"] for r in got["records"]] == [r["char"] for r in want["records"]]
        assert [r["bits"] for r in got["records"][1:]] == pytest.approx(
            [r["bits"] for r in want["records"][1:]], abs=2e-4
        )
        assert c.post("/v1/explain", json={"text": "ab", "top_k": 0}).json()["error"]["param"] == "top_k"
        assert c.post("/v1/score", json={"text": "ab", "lines": ["x"]}).status_code == 400


def test_metrics_in_prometheus_text_format(server) -> None:
    with server.client() as c:
        c.post("/v1/completions", json={"max_tokens": 20})
        c.post("/v1/completions", json={"n": 99})
        r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$')
    for line in r.text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    text = r.text
    assert 'charlm_requests_total{route="/v1/completions",status="200"}' in text
    assert 'charlm_requests_total{route="/v1/completions",status="400"}' in text
    assert int(re.search(r"^charlm_generated_characters_total (\d+)", text, re.M).group(1)) >= 20
    assert re.search(r"^charlm_time_to_first_character_seconds_count [1-9]", text, re.M)
    assert re.search(r"^charlm_time_per_character_seconds_count [1-9]", text, re.M)
    assert "charlm_batch_streams " in text and "charlm_queued_requests " in text


def test_api_key_guards_every_route_but_health(start_server, tiny_run: Path) -> None:
    for s in (start_server(tiny_run, "--api-key", "s3cret"), start_server(tiny_run, env={"CHARLM_API_KEY": "s3cret"})):
        with s.client() as c:
            assert c.get("/health").status_code == 200
            for method, path in [("GET", "/"), ("GET", "/metrics"), ("GET", "/v1/models"), ("POST", "/v1/completions")]:
                r = c.request(method, path)
                assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
                bad = c.request(method, path, headers={"Authorization": "Bearer s3cre"})
                assert bad.status_code == 401
            ok = c.post("/v1/completions", json={"max_tokens": 3}, headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret")
        assert len(client.completions.create(model="x", prompt="a", max_tokens=4).choices[0].text) == 4


def test_binds_loopback_and_warns_when_open_without_a_key(start_server, tiny_run: Path) -> None:
    s = start_server(tiny_run)
    assert s.url.startswith("http://127.0.0.1:") and str(tiny_run) in s.stderr
    s = start_server(tiny_run, "--host", "0.0.0.0")
    assert "warning:" in s.stderr and "without an API key" in s.stderr


def test_a_full_queue_answers_503_and_the_admitted_finish(start_server, tiny_run: Path) -> None:
    s = start_server(
        tiny_run, "--max-streams", "1", "--max-queue", "1", "--max-tokens", "200000", "--max-request-chars", "200000"
    )
    body = {"max_tokens": 150_000, "prompt": "the"}
    with s.client() as c, cf.ThreadPoolExecutor(2) as pool:
        first = pool.submit(stream_text, c, body)
        _wait_metric(c, "charlm_batch_streams", 1)
        second = pool.submit(stream_text, c, {**body, "max_tokens": 100})
        _wait_metric(c, "charlm_queued_requests", 1)
        r = c.post("/v1/completions", json={"max_tokens": 5})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "server_busy"
        assert len(first.result()[0][0]) == 150_000 and len(second.result()[0][0]) == 100


def _metric(c: httpx.Client, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)", c.get("/metrics").text, re.M).group(1))


def _wait_metric(c: httpx.Client, name: str, value: float, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while _metric(c, name) != value:
        assert time.monotonic() < end, f"{name} never reached {value}"
        time.sleep(0.02)


def test_clients_that_disconnect_free_their_places_at_once(start_server, tiny_run: Path) -> None:
    s = start_server(tiny_run, "--max-tokens", "2000000", "--max-request-chars", "2000000")
    clients = [s.client() for _ in range(32)]
    streams = []
    for c in clients:
        cm = c.stream("POST", "/v1/completions", json={"max_tokens": 2_000_000, "stream": True})
        lines = cm.__enter__().iter_lines()
        next(lines)  # the first chunk has arrived: the sample is in the batch
        streams.append((cm, lines))  # (an iterator let go of closes its connection)
    with s.client() as probe:
        assert _metric(probe, "charlm_batch_streams") == 32
        for (cm, _), c in zip(streams, clients, strict=True):
            cm.__exit__(None, None, None)
            c.close()
        _wait_metric(probe, "charlm_batch_streams", 0, timeout=5)
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(1) as pool:
            fresh = pool.submit(stream_text, probe.__class__(base_url=s.url, timeout=60), {"max_tokens": 20_000})
            _wait_metric(probe, "charlm_batch_streams", 1)  # alone in the batch: the whole step is its own
            assert len(fresh.result()[0][0]) == 20_000
        assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_lets_streams_finish_and_exits_0(start_server, tiny_run: Path, sig) -> None:
    s = start_server(tiny_run, "--max-tokens", "200000", "--max-request-chars", "200000")
    with s.client() as c, cf.ThreadPoolExecutor(1) as pool:
        running = pool.submit(stream_text, c, {"max_tokens": 60_000})
        _wait_metric(c, "charlm_batch_streams", 1)
        code, out = s.stop(sig=sig)
        texts, chunks = running.result()
    assert code == 0 and out == ""
    assert len(texts[0]) == 60_000 and chunks[-1]["choices"][-1]["finish_reason"] == "length"
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/health")


def test_watch_switches_to_a_new_best_between_requests(start_server, tiny_run: Path, tmp_path: Path) -> None:
    from charlm import checkpoint as ckpt_io

    run = tmp_path / "watched"
    shutil.copytree(tiny_run, run)
    old = ckpt_io.resolve(run)
    want_old = cli_sample(run, "--seed", "4", "--length", "3000")
    s = start_server(run, "--watch", "--max-tokens", "5000", "--max-request-chars", "5000")
    with s.client() as c, cf.ThreadPoolExecutor(1) as pool:
        running = pool.submit(stream_text, c, {"max_tokens": 3000, "seed": 4})
        # a checkpoint being written (its hidden folder) is never loaded, even with a better score in it
        partial = run / f".tmp-step-{old.step + 50:08d}-99999"
        partial.mkdir()
        meta = {**old.meta, "step": old.step + 50, "metrics": {"val_bpc": 0.01}}
        (partial / "checkpoint.json").write_text(json.dumps(meta))
        time.sleep(2.5)
        assert c.get("/v1/models").json()["data"][0]["checkpoint"] == str(old.path)
        # a complete new best is served from the next request on
        model, tok = ckpt_io.load_model(old)
        meta = {**old.meta, "step": old.step + 100, "metrics": {**old.meta.get("metrics", {}), "val_bpc": 0.02}}
        ckpt_io.save(run, meta, {k: v * 1.01 for k, v in model.state_dict().items()}, {})
        new = ckpt_io.resolve(run)
        assert new.step == old.step + 100
        assert s.wait_for(f"now serving {new.path}")
        assert c.get("/v1/models").json()["data"][0]["checkpoint"] == str(new.path)
        assert running.result()[0] == [want_old]  # began on the old model, finished on it
    want_new = cli_sample(new.path, "--seed", "4", "--length", "200")
    with s.client() as c:
        got = c.post("/v1/completions", json={"max_tokens": 200, "seed": 4}).json()["choices"][0]["text"]
    assert got == want_new != want_old[:200]


def test_without_the_extra_serve_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None; from charlm.cli import main; sys.argv = ['charlm', 'serve']; main()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == "error: charlm serve needs its extra: pip install 'charlm[serve]'"


def test_unknown_routes_and_methods_answer_in_the_error_shape(server) -> None:
    with server.client() as c:
        assert c.get("/v2/nothing").json()["error"]["type"] == "not_found"
        assert c.get("/v1/completions").status_code == 405
        assert c.get("/v1/completions").json()["error"]["message"]
