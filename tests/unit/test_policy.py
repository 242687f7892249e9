"""@task(...) options: checked when the decorator runs, each bad value named."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fastworker import task
from fastworker.tasks.policy import DEFAULT_POLICY, TaskPolicy, make_policy
from fastworker.tasks.registry import registry


def test_options_are_kept_on_the_definition():
    def before(ctx):
        pass

    @task(name="p.all", retries=3, retry_delay=0.5, retry_backoff=2.0, retry_backoff_max=10, timeout=30,
          before=before)
    def f():
        pass

    policy = f.__fastworker_task__.policy
    assert (policy.retries, policy.retry_delay, policy.retry_backoff, policy.retry_backoff_max) == (3, 0.5, 2.0, 10.0)
    assert policy.timeout == 30.0 and policy.before is before and not policy.periodic


def test_a_plain_task_has_the_default_policy():
    @task(name="p.plain")
    def f():
        pass

    assert f.__fastworker_task__.policy is DEFAULT_POLICY
    assert DEFAULT_POLICY.retries == 0 and DEFAULT_POLICY.timeout is None


def test_retry_delays_grow_by_the_backoff_up_to_its_maximum():
    policy = make_policy(retries=5, retry_delay=1.0, retry_backoff=2.0, retry_backoff_max=5.0)
    assert [policy.retry_delay_after(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert make_policy(retries=2, retry_delay=0.25).retry_delay_after(2) == 0.25  # backoff 1: constant


def test_per_call_overrides_replace_only_what_they_name():
    policy = make_policy(retries=1, timeout=5)
    assert policy.with_overrides() is policy
    assert policy.with_overrides(retries=4) == TaskPolicy(retries=4, timeout=5.0)
    assert policy.with_overrides(timeout=1.5).timeout == 1.5
    with pytest.raises(ValueError, match="retries must be >= 0"):
        policy.with_overrides(retries=-1)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"retries": -1}, ValueError, "retries must be >= 0, not -1"),
        ({"retries": 1.5}, TypeError, "retries must be an int"),
        ({"retries": True}, TypeError, "retries must be an int"),
        ({"timeout": 0}, ValueError, "timeout must be > 0 seconds"),
        ({"timeout": "5"}, TypeError, "timeout must be a number of seconds"),
        ({"timeout": float("inf")}, TypeError, "timeout must be a number"),
        ({"retry_delay": -1}, ValueError, "retry_delay must be >= 0"),
        ({"retry_backoff": 0.5}, ValueError, "retry_backoff must be >= 1"),
        ({"repeat_interval": 0}, ValueError, "repeat_interval must be > 0"),
        ({"cron": "* * *"}, ValueError, "cron must be 5 fields"),
        ({"cron": "61 * * * *"}, ValueError, "not valid"),
        ({"cron": "* * * * *", "repeat_interval": 5}, ValueError, "not both"),
        ({"repeat_count": 3}, ValueError, "need repeat_interval= or cron="),
        ({"repeat_interval": 5, "repeat_count": 0}, ValueError, "repeat_count must be >= 1"),
        ({"repeat_interval": 5, "repeat_until": "tomorrow"}, TypeError, "repeat_until must be a datetime"),
        ({"before": 3}, TypeError, "before= must be callable"),
    ],
)
def test_a_bad_option_fails_at_decoration_naming_it(options, error, message):
    with pytest.raises(error, match=message):
        task(name="p.bad", **options)
    assert "p.bad" not in registry


def test_periodic_options():
    until = datetime(2030, 1, 1, tzinfo=timezone.utc)
    policy = make_policy(cron="*/5 * * * 0", repeat_count=3, repeat_until=until)
    assert policy.periodic and policy.cron == "*/5 * * * 0" and policy.repeat_until == until
    assert make_policy(repeat_interval=60).periodic
