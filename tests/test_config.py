import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastq import App
from fastq.celery_settings import CELERY_DEFAULTS
from fastq.config import SETTINGS, Config, IgnoredSettingWarning
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


# -- Celery's old names, namespaces and environment ---------------------------------------------
class OldSettings:
    BROKER_URL = "redis://127.0.0.1:6379/3"
    CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/4"
    CELERY_TASK_SERIALIZER = "msgpack"
    CELERY_TASK_RESULT_EXPIRES = 60
    CELERYD_CONCURRENCY = 3
    CELERY_ACKS_LATE = True
    CELERY_ROUTES: ClassVar = {"proj.*": {"queue": "q"}}
    SOME_CONSTANT = 1  # not a setting of Celery's: not read


OLD_READ = {
    "broker_url": "redis://127.0.0.1:6379/3",
    "result_backend": "redis://127.0.0.1:6379/4",
    "task_serializer": "msgpack",
    "result_expires": 60,
    "worker_concurrency": 3,
    "task_acks_late": True,
    "task_routes": {"proj.*": {"queue": "q"}},
}


def _celery_conf(obj: object, namespace: str | None = None) -> Any:
    import celery

    capp = celery.Celery(set_as_current=False)
    capp.config_from_object(obj, namespace=namespace)
    return capp.conf


def test_old_upper_case_names_are_read_as_celery_reads_them() -> None:
    app = App("x", set_as_current=False)
    app.config_from_object(OldSettings)
    celery_conf = _celery_conf(OldSettings)
    for name, value in OLD_READ.items():
        assert app.conf[name] == value == celery_conf[name], name
    assert app.broker_url == "redis://127.0.0.1:6379/3"  # not the embedded sqlite:///fastq.db
    assert app.conf.CELERYD_CONCURRENCY == 3  # old names read back too, as Celery's conf


class Mixed:
    broker_url = "redis://127.0.0.1:6379/3"
    CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/4"


class MixedButBoth:
    broker_url = "redis://127.0.0.1:6379/3"
    result_backend = "redis://127.0.0.1:6379/5"
    CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/4"


def test_old_and_new_names_may_not_be_mixed_as_in_celery() -> None:
    from celery.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured):
        _celery_conf(Mixed).broker_url  # noqa: B018  Celery reads lazily
    app = App("x", set_as_current=False)
    with pytest.raises(ConfigurationError, match="CELERY_RESULT_BACKEND -> result_backend"):
        app.config_from_object(Mixed)
    # Given under both names it is no mix: the new name wins, in both.
    app.config_from_object(MixedButBoth)
    assert app.conf.result_backend == _celery_conf(MixedButBoth).result_backend


class DjangoSettings:
    DEBUG = True
    DATABASES: ClassVar = {"default": {}}
    TIME_ZONE = "Europe/Paris"
    CELERY_BROKER_URL = "redis://127.0.0.1:6379/3"
    CELERY_RESULT_BACKEND = "redis://127.0.0.1:6379/4"
    CELERY_TASK_ACKS_LATE = True
    CELERY_TASK_RESULT_EXPIRES = 60  # an old name under the namespace


def test_namespace_reads_django_style_settings_as_celery_does() -> None:
    app = App("x", set_as_current=False)
    app.config_from_object(DjangoSettings, namespace="CELERY")
    celery_conf = _celery_conf(DjangoSettings, namespace="CELERY")
    for name in ("broker_url", "result_backend", "task_acks_late", "result_expires", "timezone"):
        assert app.conf[name] == getattr(celery_conf, name), name
    assert app.conf.broker_url == "redis://127.0.0.1:6379/3"
    assert app.conf.timezone == "Europe/Paris"  # Django's TIME_ZONE, as Celery
    assert app.conf.result_expires == 60
    on_init = App("y", config_source=DjangoSettings, namespace="CELERY", set_as_current=False)
    assert on_init.conf.task_acks_late is True


class DjangoTypo:
    CELERY_BROKR_URL = "redis://127.0.0.1:6379/3"


class Namespaced:
    CELERY_BROKER_URL = "redis://127.0.0.1:6379/3"


class UpperNew:
    TASK_ACKS_LATE = True


def test_settings_fastq_would_not_read_are_refused_not_skipped() -> None:
    app = App("x", set_as_current=False)
    with pytest.raises(ConfigurationError, match=r"'CELERY_BROKR_URL'.*did you mean 'broker_url'"):
        app.config_from_object(DjangoTypo, namespace="CELERY")
    app = App("x", set_as_current=False)  # the namespace of config_from_object stays, as Celery's
    with pytest.raises(ConfigurationError, match="namespace='CELERY'"):
        app.config_from_object(Namespaced)  # Celery: skipped, and the default broker used
    with pytest.raises(ConfigurationError, match="lower-case"):
        app.config_from_object(UpperNew)


def test_config_from_object_silent_and_envvar(monkeypatch: pytest.MonkeyPatch) -> None:
    app = App("x", set_as_current=False)
    app.config_from_object("no_such_module_here", silent=True)
    with pytest.raises(ImportError):
        app.config_from_object("no_such_module_here")
    monkeypatch.setenv("FASTQ_TEST_CONFIG", "tests.test_config:OldSettings")
    app.config_from_envvar("FASTQ_TEST_CONFIG")
    assert app.conf.worker_concurrency == 3
    monkeypatch.delenv("FASTQ_TEST_CONFIG")
    with pytest.raises(ConfigurationError, match="FASTQ_TEST_CONFIG"):
        app.config_from_envvar("FASTQ_TEST_CONFIG")


def test_celery_environment_wins_over_configuration_as_in_celery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import celery

    monkeypatch.setenv("FASTQ_BROKER_URL", "redis://127.0.0.1:6379/5")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/2")
    app = App("x", broker="redis://127.0.0.1:6379/9", set_as_current=False)
    capp = celery.Celery(broker="redis://127.0.0.1:6379/9", set_as_current=False)
    assert app.broker_url == capp.conf.broker_url == "redis://127.0.0.1:6379/1"
    assert app.conf["result_backend"] == capp.conf.result_backend == "redis://127.0.0.1:6379/2"
    assert app.result_backend_url == "redis://127.0.0.1:6379/2"
    monkeypatch.delenv("CELERY_BROKER_URL")
    assert app.broker_url == "redis://127.0.0.1:6379/9"  # then the configuration
    assert App("y", set_as_current=False).broker_url == "redis://127.0.0.1:6379/5"  # then FASTQ_


def test_cli_flags_win_over_the_celery_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastq import cli

    url = f"sqlite:///{tmp_path}/fastq.db"
    App("x", broker=url, set_as_current=False).send_task("t")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    assert cli.main(["-b", url, "purge"]) == 0
    assert os.environ["CELERY_BROKER_URL"] == url


# -- every setting of Celery's is accepted ------------------------------------------------------
def test_every_celery_setting_is_accepted_with_its_default_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, default in CELERY_DEFAULTS.items():
            Config(**{name: default})


def test_every_celery_setting_takes_effect_or_says_why_not() -> None:
    from fastq.config import REFUSED, no_effect_reason

    implemented = {  # read by fastq (grep for each)
        name for name, (_, validate) in SETTINGS.items() if validate.__name__ != "_any"
    } | {"broker_use_ssl", "task_queues", "task_routes", "task_annotations"}
    for name in CELERY_DEFAULTS:
        assert name in implemented or no_effect_reason(name) or name in REFUSED, name


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("cassandra_servers", ["db1"], "result backend fastq does not have"),
        ("event_queue_ttl", 10.0, "no event receiver"),
        ("event_serializer", "pickle", "as JSON"),
        ("broker_channel_error_retry", True, "connection loss"),
        ("broker_pool_limit", 1, "not a pool"),
        ("worker_log_color", True, "color"),
        ("CELERY_EVENT_SERIALIZER", "msgpack", "as JSON"),  # an old name: under the new one
    ],
)
def test_a_setting_without_effect_warns_once_naming_it(name: str, value: Any, reason: str) -> None:
    conf = Config()
    new = conf._check(name)
    with pytest.warns(IgnoredSettingWarning, match=rf"'{new}' has no effect in fastq: .*{reason}"):
        conf[name] = value
    assert conf[new] == value  # kept, as Celery keeps it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conf[name] = value  # once


def test_settings_that_take_effect_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Config(
            task_reject_on_worker_lost=False,
            broker_connection_retry=False,
            broker_connection_max_retries=3,
            broker_connection_retry_on_startup=False,
            worker_disable_rate_limits=True,
            worker_hijack_root_logger=False,
            timezone="Asia/Tokyo",
        )


def test_settings_that_would_reach_another_server_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"'broker_host'.*broker_url"):
        Config(broker_host="rabbit.example")
    with pytest.raises(ConfigurationError, match="'broker_read_url'"):
        App("x", BROKER_READ_URL="redis://127.0.0.1:6379/1", set_as_current=False)
    with pytest.raises(ConfigurationError, match=r"task_protocol.*protocol 2"):
        Config(task_protocol=1)
    with pytest.raises(ConfigurationError, match=r"timezone.*unknown time zone"):
        Config(timezone="Mars/Olympus")


def test_typos_still_get_a_suggestion_among_all_names() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'beat_schedule'"):
        Config(beat_schedul={})
    with pytest.raises(ConfigurationError, match="did you mean 'task_acks_late'"):
        App("x", set_as_current=False).config_from_object(type("S", (), {"task_acks_lat": 1}))


def test_celery_read_and_write_broker_variables_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_BROKER_READ_URL", "redis://127.0.0.1:6379/1")
    with pytest.raises(ConfigurationError, match="CELERY_BROKER_READ_URL"):
        App("x", broker="redis://127.0.0.1:6379/2", set_as_current=False).broker_url  # noqa: B018


class DjangoNoNamespace:
    TIME_ZONE = "Asia/Tokyo"
    CELERY_TASK_SERIALIZER = "json"


class DjangoBothZones:
    TIME_ZONE = "Asia/Tokyo"
    CELERY_TIMEZONE = "Europe/Paris"


@pytest.mark.parametrize("obj", [DjangoNoNamespace, DjangoBothZones])
@pytest.mark.parametrize("namespace", [None, "CELERY"])
def test_django_time_zone_is_read_as_celery_reads_it(obj: type, namespace: str | None) -> None:
    app = App("x", set_as_current=False)
    app.config_from_object(obj, namespace=namespace)
    assert app.conf.timezone == _celery_conf(obj, namespace).timezone


def test_config_from_a_mapping_as_celery() -> None:
    settings = {"broker_url": "redis://127.0.0.1:6379/3", "task_acks_late": True}
    app = App("x", set_as_current=False)
    app.config_from_object(settings)
    celery_conf = _celery_conf(settings)
    assert app.conf.broker_url == celery_conf.broker_url == "redis://127.0.0.1:6379/3"
    assert app.conf.task_acks_late is celery_conf.task_acks_late is True
    app.config_from_object({"CELERYD_CONCURRENCY": 2})
    assert app.conf.worker_concurrency == 2


def test_a_setting_read_as_an_attribute_follows_every_change(monkeypatch):
    conf = Config(task_acks_late=True)
    assert conf.task_acks_late is True
    conf["task_acks_late"] = False
    assert conf.task_acks_late is False
    conf.update(task_acks_late=True)
    assert conf.task_acks_late is True
    del conf["task_acks_late"]
    assert conf.task_acks_late is False
    conf.CELERY_ACKS_LATE = True  # an old name
    assert conf.task_acks_late is True and conf.CELERY_ACKS_LATE is True
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/3")
    assert conf.broker_url == "redis://127.0.0.1:6379/3"  # read from the environment each time
    with pytest.raises(AttributeError, match="unknown setting"):
        _ = conf.task_acks_lately


def test_no_setting_is_hidden_by_what_config_itself_holds() -> None:
    # Settings are mirrored as instance attributes: one named as a method of Config, or as one
    # of its own attributes (the version counter), would hide it or be hidden.
    own = {name for name in vars(Config()) if name.startswith("_") or name == "version"}
    assert "version" in own and "_values" in own
    assert [name for name in SETTINGS if hasattr(Config, name) or name in own] == []
