"""The scrape collector's pure core against real vLLM /metrics pages (tests/billing/fixtures,
written by prometheus_client with vLLM V1's metric definitions): parsing, counter and histogram
deltas, restarts, and the property that deltas across any restarts add up to what was served."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing import latency, scrape
from scheduler.fleet import metrics as simulator_metrics

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "vllm_expected.json").read_text())


def page(name: str) -> scrape.Scrape:
    return scrape.parse((FIXTURES / name).read_text())


def test_a_vllm_page_parses_into_its_token_and_request_counters():
    first = page("vllm_v1_metrics.txt")
    deltas = scrape.deltas(None, first)  # a first scrape: everything since the server started
    expected = EXPECTED["vllm_v1_metrics.txt"]
    assert deltas.usage == {"input_tokens": expected["prompt_tokens"], "output_tokens": expected["generation_tokens"],
                            "requests": expected["requests"]}
    # request_success is one series per finished_reason, all carrying model_name and engine.
    series = [json.loads(labels) for labels in first.counters["requests"]]
    assert sorted(s["finished_reason"] for s in series) == ["abort", "length", "stop"]
    assert all(s["model_name"] == "meta-llama/Llama-3.1-8B-Instruct" and s["engine"] == "0" for s in series)
    assert {c.created for c in first.counters["input_tokens"].values()} == {expected["created"]}


def test_histograms_become_per_bucket_counts_with_the_inf_bucket_last():
    first = page("vllm_v1_metrics.txt")
    assert first.histogram_names == {"ttft": "vllm:time_to_first_token_seconds",
                                     "tpot": "vllm:time_per_output_token_seconds",
                                     "e2e": "vllm:e2e_request_latency_seconds"}
    deltas = scrape.deltas(None, first)
    ttft = deltas.histograms["ttft"]
    assert ttft["le"] == list(simulator_metrics.TTFT_BUCKETS)  # vLLM's bounds, +Inf implied
    assert len(ttft["counts"]) == len(ttft["le"]) + 1
    expected = EXPECTED["vllm_v1_metrics.txt"]
    assert latency.count(ttft) == expected["ttft_count"]
    assert ttft["sum"] == pytest.approx(expected["ttft_sum"])
    assert deltas.request_count == expected["requests"]
    assert deltas.histograms["e2e"]["sum"] == pytest.approx(expected["e2e_sum"])
    # One inter-token latency per generated token after a request's first.
    assert latency.count(deltas.histograms["tpot"]) == expected["generation_tokens"] - expected["requests"]


def test_the_next_scrape_counts_only_what_happened_since():
    first, later = page("vllm_v1_metrics.txt"), page("vllm_v1_metrics_later.txt")
    deltas = scrape.deltas(scrape.state(first), later)
    before, after = EXPECTED["vllm_v1_metrics.txt"], EXPECTED["vllm_v1_metrics_later.txt"]
    assert deltas.usage == {"input_tokens": after["prompt_tokens"] - before["prompt_tokens"],
                            "output_tokens": after["generation_tokens"] - before["generation_tokens"],
                            "requests": after["requests"] - before["requests"]}
    assert deltas.resets == ()
    assert deltas.request_count == after["requests"] - before["requests"]
    assert deltas.histograms["ttft"]["sum"] == pytest.approx(after["ttft_sum"] - before["ttft_sum"])


def test_the_same_page_twice_counts_nothing_the_second_time():
    later = page("vllm_v1_metrics_later.txt")
    again = scrape.deltas(scrape.state(later), later)
    assert not again.has_usage and again.request_count == 0
    assert all(latency.count(h) == 0 for h in again.histograms.values())
    assert scrape.position(later) == scrape.position(page("vllm_v1_metrics_later.txt"))
    assert scrape.position(later) != scrape.position(page("vllm_v1_metrics.txt"))


def test_a_restarted_server_counts_its_new_values_whole():
    later, restarted = page("vllm_v1_metrics_later.txt"), page("vllm_v1_metrics_restarted.txt")
    deltas = scrape.deltas(scrape.state(later), restarted)
    expected = EXPECTED["vllm_v1_metrics_restarted.txt"]
    assert deltas.usage == {"input_tokens": expected["prompt_tokens"], "output_tokens": expected["generation_tokens"],
                            "requests": expected["requests"]}
    assert deltas.request_count == expected["requests"]
    assert any(name.startswith("vllm:prompt_tokens_total") for name in deltas.resets)


def test_a_changed_created_time_is_a_restart_even_when_the_counter_is_higher():
    text = (FIXTURES / "vllm_v1_metrics_later.txt").read_text()
    before = page("vllm_v1_metrics.txt")
    # The same values under a new `_created`: a restarted server that already served more.
    restarted = scrape.parse(text.replace("1.748779200123456e+09", "1.748779300e+09"))
    deltas = scrape.deltas(scrape.state(before), restarted)
    assert deltas.input_tokens == EXPECTED["vllm_v1_metrics_later.txt"]["prompt_tokens"]


def test_a_page_older_than_the_last_recorded_counts_nothing_and_keeps_the_later_baseline():
    # Two scrapes crossing: the earlier page is recorded after the later one. Same `_created`,
    # lower values: not a restart.
    first, later = page("vllm_v1_metrics.txt"), page("vllm_v1_metrics_later.txt")
    crossed = scrape.deltas(scrape.state(later), first)
    assert not crossed.has_usage and crossed.resets == () and crossed.behind
    assert all(latency.is_empty(h) for h in crossed.histograms.values())
    assert crossed.state == scrape.state(later)
    assert not scrape.deltas(crossed.state, later).has_usage


def test_without_created_samples_a_lower_value_is_a_restart():
    # vLLM's multiprocess mode (several API server processes) exposes no `_created`.
    def text(value):
        return f'# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{{engine="0"}} {value}\n'

    deltas = scrape.deltas(scrape.state(scrape.parse(text(500.0))), scrape.parse(text(120.0)))
    assert deltas.input_tokens == 120 and deltas.resets


def test_a_data_parallel_server_of_a_newer_vllm_reads_inter_token_latency_and_sums_its_engines():
    two = page("vllm_v0_13_two_engines_metrics.txt")
    assert two.histogram_names["tpot"] == "vllm:inter_token_latency_seconds"
    engines = {json.loads(labels)["engine"] for labels in two.counters["input_tokens"]}
    assert engines == {"0", "1"}
    deltas = scrape.deltas(None, two)
    expected = EXPECTED["vllm_v0_13_two_engines_metrics.txt"]
    assert deltas.usage == {"input_tokens": expected["prompt_tokens"], "output_tokens": expected["generation_tokens"],
                            "requests": expected["requests"]}
    assert latency.count(deltas.histograms["tpot"]) == expected["generation_tokens"] - expected["requests"]
    assert deltas.request_count == expected["requests"]


def test_the_simulated_fleet_page_parses_the_same_way():
    definitions = {key: simulator_metrics.LATENCY_HISTOGRAMS[key] for key in ("ttft", "tpot", "itl", "e2e")}
    histograms = {key: simulator_metrics.empty_histogram(d) for key, d in definitions.items()}
    for key, definition in definitions.items():
        simulator_metrics.observe(histograms[key], definition.buckets, 0.2, weight=3)
    snapshot = simulator_metrics.Snapshot(
        model_name="chat", created=1.9e9, running=1, waiting=0, kv_cache_usage=0.1, prompt_tokens=900,
        generation_tokens=300, success={"stop": 2, "length": 1}, preemptions=0, histograms=histograms,
        definitions=definitions)
    deltas = scrape.deltas(None, scrape.parse(simulator_metrics.exposition(snapshot)))
    assert deltas.usage == {"input_tokens": 900, "output_tokens": 300, "requests": 3}
    assert deltas.request_count == 3
    assert latency.histogram_quantile(0.5, deltas.histograms["ttft"]) == pytest.approx(0.175)  # in (0.1, 0.25]


@pytest.mark.parametrize("text, reason", [
    ("<html>502 Bad Gateway</html>", "Prometheus text"),
    ("# TYPE up gauge\nup 1\n", "is this a vLLM server"),
    ('# TYPE vllm:e2e_request_latency_seconds histogram\n'
     'vllm:prompt_tokens_total{engine="0"} 5\n'
     'vllm:e2e_request_latency_seconds_bucket{le="1.0"} 2\n', "no \\+Inf bucket"),
])
def test_a_page_that_is_not_vllm_metrics_is_refused_with_the_reason(text, reason):
    with pytest.raises(scrape.ScrapeError, match=reason):
        scrape.parse(text)


def test_a_state_this_code_did_not_write_is_refused():
    with pytest.raises(scrape.ScrapeError, match="version"):
        scrape.deltas({"version": 99}, page("vllm_v1_metrics.txt"))


# --- property: deltas across restarts add up to what was served ---------------------------

BOUNDS = (0.1, 1.0, 10.0)


def exposition(server: dict) -> str:
    """A minimal vLLM page for a simulated server's counters and one histogram."""
    labels = 'engine="0",model_name="m"'
    lines = ["# TYPE vllm:prompt_tokens_total counter",
             f"vllm:prompt_tokens_total{{{labels}}} {float(server['tokens'])}",
             "# TYPE vllm:prompt_tokens_created gauge",
             f"vllm:prompt_tokens_created{{{labels}}} {server['created']!r}",
             "# TYPE vllm:request_success_total counter"]
    for reason in ("stop", "length"):
        lines.append(f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} '
                     f"{float(server['requests'][reason])}")
    lines.append("# TYPE vllm:request_success_created gauge")
    for reason in ("stop", "length"):
        lines.append(f'vllm:request_success_created{{{labels},finished_reason="{reason}"}} {server["created"]!r}')
    lines.append("# TYPE vllm:e2e_request_latency_seconds histogram")
    cumulative = 0
    for bound, count in zip((*BOUNDS, "+Inf"), server["buckets"], strict=True):
        cumulative += count
        lines.append(f'vllm:e2e_request_latency_seconds_bucket{{{labels},le="{bound}"}} {float(cumulative)}')
    lines.append(f"vllm:e2e_request_latency_seconds_count{{{labels}}} {float(cumulative)}")
    lines.append(f"vllm:e2e_request_latency_seconds_sum{{{labels}}} {float(cumulative)}")
    lines.append("# TYPE vllm:e2e_request_latency_seconds_created gauge")
    lines.append(f"vllm:e2e_request_latency_seconds_created{{{labels}}} {server['created']!r}")
    return "\n".join(lines) + "\n"


steps = st.lists(st.tuples(
    st.booleans(),  # the server restarts right after the previous scrape
    st.integers(min_value=0, max_value=5000),  # tokens served before the next scrape
    st.sampled_from(["stop", "length"]),
    st.integers(min_value=0, max_value=20),  # requests finished before the next scrape
    st.integers(min_value=0, max_value=3),  # the latency bucket they fell in
), min_size=1, max_size=25)


@given(steps)
def test_deltas_across_random_restarts_sum_to_the_true_increments(history):
    server = {"created": 1.7e9, "tokens": 0, "requests": {"stop": 0, "length": 0}, "buckets": [0] * 4}
    state = None
    counted = {"tokens": 0, "requests": 0, "latency": [0] * 4}
    served = {"tokens": 0, "requests": 0, "latency": [0] * 4}
    for index, (restart, tokens, reason, requests, bucket) in enumerate(history):
        if restart:
            server = {"created": 1.7e9 + index + 1, "tokens": 0, "requests": {"stop": 0, "length": 0},
                      "buckets": [0] * 4}
        server["tokens"] += tokens
        server["requests"][reason] += requests
        server["buckets"][bucket] += requests
        served["tokens"] += tokens
        served["requests"] += requests
        served["latency"][bucket] += requests
        page_now = scrape.parse(exposition(server))
        deltas = scrape.deltas(state, page_now)
        state = json.loads(json.dumps(deltas.state))  # as stored in ScrapeState
        counted["tokens"] += deltas.input_tokens
        counted["requests"] += deltas.requests
        e2e = deltas.histograms["e2e"] or {"counts": [0] * 4}  # {}: nothing observed
        counted["latency"] = [a + b for a, b in zip(counted["latency"], e2e["counts"], strict=True)]
        assert deltas.request_count == deltas.requests  # every finished request has one E2E observation
    assert counted["tokens"] == served["tokens"]
    assert counted["requests"] == served["requests"]
    assert counted["latency"] == served["latency"]


@given(st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=20), st.data())
def test_a_restart_between_scrapes_never_counts_more_than_was_served(increments, data):
    # Increments made after the last scrape before a restart are lost (the server took them
    # with it) — never double counted.
    created, value, state, counted, served = 1.0e9, 0, None, 0, 0
    for index, increment in enumerate(increments):
        if data.draw(st.booleans(), label=f"restart before scrape {index}"):
            created, value = created + 1, 0
        value += increment
        served += increment
        text = (f"# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{{engine=\"0\"}} "
                f"{float(value)}\nvllm:generation_tokens_created{{engine=\"0\"}} {created!r}\n")
        page_now = scrape.parse(text)
        deltas = scrape.deltas(state, page_now)
        counted += deltas.output_tokens
        state = deltas.state
    assert counted <= served


@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=1000)), min_size=1, max_size=15),
       st.data())
def test_pages_recorded_in_any_order_never_count_more_than_was_served(history, data):
    # Crossing scrapes record pages out of order, around restarts too: a page may be late,
    # never counted twice.
    pages, created, value, served = [], 1.0e9, 0, 0
    for restart, increment in history:
        if restart:
            created, value = created + 60, 0
        value += increment
        served += increment
        pages.append(f"# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{{engine=\"0\"}} "
                     f"{float(value)}\nvllm:prompt_tokens_created{{engine=\"0\"}} {created!r}\n")
    order = data.draw(st.lists(st.sampled_from(range(len(pages))), max_size=30), label="pages recorded")
    state, counted = None, 0
    for index in [*order, len(pages) - 1]:
        deltas = scrape.deltas(state, scrape.parse(pages[index]))
        counted += deltas.input_tokens
        state = deltas.state
    assert counted <= served
