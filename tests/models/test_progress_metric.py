"""``ProgressMetric``'s factories, bounds and unit conversion."""

from __future__ import annotations

from datetime import datetime

import pytest

from notifier.models import ProgressMetric


def test_response_time_metric_and_unit_conversion() -> None:
    m = ProgressMetric.create_response_time_metric("api_latency", 1500, labels={"route": "/x"})
    assert m.metric_name == "api_latency" and m.unit == "ms" and m.value == 1500.0
    assert m.labels == {"route": "/x"}
    assert m.value_in("ms") == 1500.0
    assert m.value_in("seconds") == pytest.approx(1.5)
    assert m.value_in("s") == pytest.approx(1.5)
    assert m.value_in("minutes") == pytest.approx(0.025)
    minutes = ProgressMetric.create("build_time", 2, "minutes")
    assert minutes.value_in("seconds") == 120.0
    assert minutes.value_in("ms") == 120_000.0


def test_value_in_refuses_non_time_units() -> None:
    m = ProgressMetric.create_percentage_metric("cpu", 50)
    with pytest.raises(ValueError):
        m.value_in("seconds")
    with pytest.raises(ValueError):
        ProgressMetric.create_response_time_metric("x", 1).value_in("hours")


def test_percentage_metric_bounds() -> None:
    assert ProgressMetric.create_percentage_metric("cpu", 0).value == 0.0
    assert ProgressMetric.create_percentage_metric("cpu", 100).unit == "percent"
    for bad in (101, -1, 100.5):
        with pytest.raises(ValueError):
            ProgressMetric.create_percentage_metric("cpu", bad)


def test_other_metric_factories() -> None:
    throughput = ProgressMetric.create_throughput_metric("sent", 12.5)
    assert throughput.unit == "per_second" and throughput.value == 12.5
    sockets = ProgressMetric.create_websocket_connection_metric(7)
    assert sockets.metric_name == "websocket_connections"
    assert sockets.unit == "count" and sockets.value == 7.0
    progress = ProgressMetric.create_task_progress_metric("t-1", 40)
    assert progress.related_task_id == "t-1" and progress.unit == "percent"
    rate = ProgressMetric.create_error_rate_metric("errors", 5, 20)
    assert rate.value == 25.0 and rate.unit == "percent"
    assert ProgressMetric.create_error_rate_metric("errors", 0, 0).value == 0.0
    rate.add_label("env", "test")
    rate.add_label("region", "eu")
    assert rate.labels == {"env": "test", "region": "eu"}
    data = rate.to_dict()
    assert data["metric_name"] == "errors" and data["is_aggregated"] is False
    assert datetime.fromisoformat(data["timestamp"]).tzinfo is not None
