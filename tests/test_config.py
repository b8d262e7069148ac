from datetime import timedelta

import pytest
from fastq import App
from fastq.config import Config
from fastq.errors import ConfigurationError


def test_defaults_follow_celery() -> None:
    conf = Config()
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_default_queue == "celery"
    assert conf.worker_prefetch_multiplier == 4
    assert conf.result_expires == 86400
    assert conf.task_acks_late is False


def test_unknown_setting_is_named_with_a_suggestion() -> None:
    conf = Config()
    with pytest.raises(ConfigurationError, match=r"'task_acks_lat'.*did you mean 'task_acks_late'"):
        conf.task_acks_lat = True
    with pytest.raises(ConfigurationError, match="unknown setting 'brokr_url'"):
        App("x", brokr_url="redis://", set_as_current=False)


def test_mistyped_value_is_refused() -> None:
    conf = Config()
    with pytest.raises(ConfigurationError, match="worker_prefetch_multiplier"):
        conf.worker_prefetch_multiplier = "four"
    with pytest.raises(ConfigurationError, match="task_acks_late"):
        conf.update(task_acks_late="maybe")


def test_values_are_normalised() -> None:
    conf = Config(result_expires=timedelta(hours=1), accept_content="json, msgpack")
    assert conf.result_expires == 3600.0
    assert conf.accept_content == ["json", "msgpack"]


def test_environment_supplies_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTQ_BROKER_URL", "redis://127.0.0.1:6379/5")
    monkeypatch.setenv("FASTQ_RESULT_BACKEND", "redis://127.0.0.1:6379/6")
    conf = Config()
    assert conf.broker_url == "redis://127.0.0.1:6379/5"
    assert conf.result_backend == "redis://127.0.0.1:6379/6"
    assert Config(broker_url="redis://x/1").broker_url == "redis://x/1"


class Settings:
    broker_url = "redis://127.0.0.1:6379/7"
    task_acks_late = True
    TASK_IGNORED_UPPER = 1  # Celery reads lower-case names only


def test_config_from_object() -> None:
    app = App("x", set_as_current=False)
    app.config_from_object(Settings)
    assert app.conf.broker_url == "redis://127.0.0.1:6379/7"
    assert app.conf.task_acks_late is True


def test_keyword_broker_and_backend() -> None:
    app = App("x", broker="redis://a/1", backend="redis://b/2", set_as_current=False)
    assert app.conf["broker_url"] == "redis://a/1"
    assert app.conf.result_backend == "redis://b/2"
