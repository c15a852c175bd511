"""``opsmcp sandbox seed`` against a slow backend and a half-seeded one (moto server over HTTP).

Regressions (found running the compose hooks against LocalStack under load):

* bulk PutMetricData ran under the tools' 5 s per-call bound ("did not answer in time to
  put 1000 datapoints"); seeding now has its own bound, small batches and retries that
  never double what a timed-out write already applied;
* a partial seed was never finished: a rerun looked only at the DLQs and the orders table,
  said "already holds the scenario ... nothing seeded" and left metrics and logs missing.
"""

from __future__ import annotations

from datetime import timedelta

import boto3
import pytest
from test_redrive_faults import StallingProxy

from opsmcp.backends.logstore import LogStore
from opsmcp.cli import main
from opsmcp.sandbox import seed
from opsmcp.sandbox.scenario import build_scenario

PUT_METRICS = "GraniteServiceVersion20100801.PutMetricData"
SEND_BATCH = "AmazonSQS.SendMessageBatch"


def _clients(endpoint: str) -> tuple:
    kw = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    return boto3.client("sqs", **kw), boto3.client("dynamodb", **kw), boto3.client("cloudwatch", **kw)


def _expected() -> tuple[dict[str, int], list]:
    """Messages per queue the scenario seeds, and its metric series."""
    scenario = build_scenario()
    want: dict[str, int] = {}
    for letter in scenario.dead_letters:
        want[letter.queue] = want.get(letter.queue, 0) + 1
    for queue, bodies in scenario.backlog.items():
        want[queue] = want.get(queue, 0) + len(bodies)
    return want, scenario.metric_series()


def _depths(sqs) -> dict[str, int]:
    """Messages (visible, in flight, delayed) per queue that holds any."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    depths = {}
    for url in sqs.list_queues(MaxResults=1000).get("QueueUrls", []):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        depths[url.rsplit("/", 1)[-1]] = sum(int(attrs.get(n, 0)) for n in names)
    return {q: n for q, n in depths.items() if n}


def _sample_count(cw, series) -> int:
    """Datapoints CloudWatch holds for one scenario series (a doubled put shows as 2x)."""
    namespace, name, dims, _, points = series
    start, end = points[0][0] - timedelta(minutes=1), points[-1][0] + timedelta(minutes=1)
    stats = cw.get_metric_statistics(Namespace=namespace, MetricName=name, StartTime=start, EndTime=end,
                                     Period=86_400, Statistics=["SampleCount"],
                                     Dimensions=[{"Name": k, "Value": v} for k, v in sorted(dims.items())])
    return int(sum(p["SampleCount"] for p in stats["Datapoints"]))


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("OPSMCP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(seed, "SEED_BACKOFF_SECONDS", 0.05, raising=False)
    return tmp_path


def test_a_partial_seed_is_finished_part_by_part_and_a_complete_one_left_alone(fresh_moto, env, capsys):
    sqs, ddb, cw = _clients(fresh_moto)
    scenario = build_scenario()
    attrs = {"VisibilityTimeout": "30", "MessageRetentionPeriod": "1209600"}  # as the seeder creates it
    dlq = sqs.create_queue(QueueName="order-queue-dlq", Attributes=attrs)["QueueUrl"]
    letters = [d for d in scenario.dead_letters if d.queue == "order-queue-dlq"][:10]
    sqs.send_message_batch(QueueUrl=dlq, Entries=[{"Id": str(n), "MessageBody": d.body}
                                                  for n, d in enumerate(letters)])  # 10 of 28, nothing else
    want, series = _expected()

    assert main(["sandbox", "seed", "--endpoint-url", fresh_moto]) == 0
    said = capsys.readouterr().err
    assert "nothing seeded" not in said, said
    assert "messages: completed (found 10 of" in said and "orders: seeded 240 orders" in said, said
    assert f"metrics: seeded {len(series)} metric series" in said and "logs: seeded 12001 log lines" in said, said
    assert _depths(sqs) == want  # every queue exactly as seeded: the 10 were not sent twice
    assert ddb.scan(TableName="orders", Select="COUNT")["Count"] == 240
    assert all(_sample_count(cw, s) == len(s[4]) for s in series[:3])
    with LogStore(env / "logs.db", readonly=True) as store:
        assert store.count() == 12001

    assert main(["sandbox", "seed", "--endpoint-url", fresh_moto]) == 0  # complete: nothing written
    said = capsys.readouterr().err
    assert "already holds the scenario; nothing seeded" in said and "logs: present (12001 of 12001" in said, said
    assert _depths(sqs) == want
    assert _sample_count(cw, series[0]) == len(series[0][4])


class Stalls:
    """Which requests the proxy holds back: the first ``n`` of each X-Amz-Target in ``slow``."""

    def __init__(self, **slow: int) -> None:
        self.slow = {PUT_METRICS if k == "put" else SEND_BATCH: n for k, n in slow.items()}
        self.seen: dict[str, int] = {}

    def __call__(self, target: str) -> bool:
        self.seen[target] = self.seen.get(target, 0) + 1
        return self.seen[target] <= self.slow.get(target, 0)


def _seed_through(proxy_target: str, stalls: Stalls, stall: float, capsys) -> None:
    proxy = StallingProxy(proxy_target, stalls, stall=stall)
    try:
        rc = main(["sandbox", "seed", "--endpoint-url", proxy.url])
        assert rc == 0, capsys.readouterr().err
    finally:
        proxy.close()


def test_seeding_outlasts_a_backend_slower_than_the_tools_bound(fresh_moto, env, monkeypatch, capsys):
    """PutMetricData takes longer than the tools' bound three times in a row (every attempt
    botocore makes for a tool call): seeding, under its own bound, waits and is done."""
    monkeypatch.setenv("OPSMCP_BACKEND_TIMEOUT_SECONDS", "1")
    _seed_through(fresh_moto, Stalls(put=3), 1.6, capsys)
    sqs, _, cw = _clients(fresh_moto)
    want, series = _expected()
    assert _depths(sqs) == want
    assert all(_sample_count(cw, s) == len(s[4]) for s in series[:4])  # the stalled ones once each


def test_a_write_that_timed_out_but_landed_is_not_sent_again(fresh_moto, env, monkeypatch, capsys):
    """The backend applies a SendMessageBatch and a PutMetricData, then answers after seeding's
    own bound: the retry finds them there (queue depth, ListMetrics) and does not resend."""
    monkeypatch.setattr(seed, "SEED_TIMEOUT_SECONDS", 1.0, raising=False)
    stalls = Stalls(put=1, send=1)
    _seed_through(fresh_moto, stalls, 2.5, capsys)
    assert stalls.seen[SEND_BATCH] >= 2 and stalls.seen[PUT_METRICS] >= 2
    sqs, _, cw = _clients(fresh_moto)
    want, series = _expected()
    assert _depths(sqs) == want  # the stalled batch of 10 is there once
    assert _sample_count(cw, series[0]) == len(series[0][4])  # the stalled series once
