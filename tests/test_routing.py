import re
from typing import Any

import pytest
from fastq.config import Config
from fastq.routing import Route, Router


def router(**settings: object) -> Router:
    return Router(Config(**settings))


def test_default_route_is_the_default_queue_via_the_default_exchange() -> None:
    assert router().route("proj.add", {}) == Route("celery", "", "celery")
    assert router(task_default_queue="jobs").route("x", {}) == Route("jobs", "", "jobs")


def test_explicit_queue_wins_over_routes() -> None:
    r = router(task_routes={"proj.add": {"queue": "math"}})
    assert r.route("proj.add", {"queue": "other"}).queue == "other"
    assert r.route("proj.add", {}).queue == "math"


def test_globs_regexes_strings_and_callables() -> None:
    def by_arg(name, args, kwargs, options, task=None):  # type: ignore[no-untyped-def]
        return {"queue": "big"} if args and args[0] > 100 else None

    r = router(
        task_routes=[
            by_arg,
            {"feed.*": {"queue": "feeds"}, re.compile(r"^img\."): "images"},
        ]
    )
    assert r.route("feed.fetch", {}).queue == "feeds"
    assert r.route("img.resize", {}).queue == "images"
    assert r.route("proj.add", {}, args=(500,)).queue == "big"
    assert r.route("proj.add", {}, args=(5,)).queue == "celery"


def test_named_exchange_keeps_its_routing_key() -> None:
    r = router(task_routes={"a": {"queue": "q", "exchange": "ex", "routing_key": "rk"}})
    assert r.route("a", {}) == Route("q", "ex", "rk")


def test_a_router_without_task_and_a_buggy_router() -> None:
    calls = []

    def plain(name, args, kwargs, options):  # type: ignore[no-untyped-def]
        calls.append(name)
        return "plain" if name == "a" else None

    assert router(task_routes=[plain]).route("a", {}).queue == "plain"

    def buggy(name, args, kwargs, options, task=None):  # type: ignore[no-untyped-def]
        calls.append(name)
        raise TypeError("bug inside the router")

    import pytest

    with pytest.raises(TypeError, match="bug inside the router"):
        router(task_routes=[buggy]).route("b", {})
    assert calls == ["a", "b"]  # each router called once


# -- Celery's other forms of task_routes -------------------------------------------------------


def route_by_name(name, args, kwargs, options, task=None, **kw):  # type: ignore[no-untyped-def]
    """A router named by its dotted path in task_routes (used below)."""
    return {"queue": f"by-{task.name if task is not None else name}"}


class LegacyRouter:
    def route_for_task(self, task, args=None, kwargs=None):  # type: ignore[no-untyped-def]
        return {"queue": "legacy"} if task.startswith("old.") else None


def test_ordered_pairs_dotted_names_and_router_objects() -> None:
    r = router(
        task_routes=(
            [("feed.tasks.*", {"queue": "feeds"}), (re.compile(r"(video|image)\.tasks\..*"),
             {"queue": "media"}), ("feed.tasks.*", {"queue": "never: the first pair wins"})],
            LegacyRouter(),
            "tests.test_routing:route_by_name",
        )
    )  # fmt: skip
    assert r.route("feed.tasks.import_feed", {}).queue == "feeds"
    assert r.route("video.tasks.encode", {}).queue == "media"
    assert r.route("old.thing", {}).queue == "legacy"
    assert r.route("proj.add", {}).queue == "by-proj.add"


def test_a_router_gets_the_task_object() -> None:
    from fastq import App

    app = App("routes", broker="memory://", set_as_current=False,
              task_routes=["tests.test_routing.route_by_name"])  # fmt: skip

    @app.task(name="routes.registered")
    def registered() -> None: ...

    assert app.build_message("routes.registered").queue == "by-routes.registered"
    assert app.build_message("routes.elsewhere").queue == "by-routes.elsewhere"


def test_route_options_apply_unless_the_call_sets_them() -> None:
    from fastq import App

    routes = {"slow.*": {"queue": "slow", "priority": 7, "time_limit": 60}}
    app = App("routes", broker="memory://", set_as_current=False, task_routes=routes)
    message = app.build_message("slow.job")
    assert (message.queue, message.priority, message.headers["timelimit"]) == (
        "slow",
        7,
        [60, None],
    )
    assert app.build_message("slow.job", priority=1).priority == 1


def test_bad_routes_are_clear_errors() -> None:
    import pytest
    from fastq.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="cannot apply: \\['delivery_mode'\\]"):
        router(task_routes={"a": {"queue": "q", "delivery_mode": 1}}).route("a", {})
    with pytest.raises(ConfigurationError, match="cannot be imported"):
        router(task_routes="no.such.module.router")
    with pytest.raises(ConfigurationError, match=r"\(pattern, route\) pairs"):
        router(task_routes=[["just-a-name"]])


# -- where a message goes, compared with Celery -----------------------------------------------


def _celery_destination(app: Any, name: str, options: dict[str, Any]) -> tuple[str, str, str]:
    """(queue, exchange, routing key) Celery publishes to: its router's answer, then the rule
    of its ``send_task_message`` (a direct exchange without both goes to the anonymous one)."""
    route = app.amqp.router.route(dict(options), name)
    queue = route["queue"]
    exchange, routing_key = route.get("exchange"), route.get("routing_key")
    if (not exchange or not routing_key) and queue.exchange.type == "direct":
        return queue.name, "", queue.name
    if exchange is None:
        exchange = queue.exchange.name
        routing_key = routing_key or queue.routing_key
    return queue.name, getattr(exchange, "name", exchange), routing_key


ROUTING_RST = {  # Celery's routing guide: a topic default exchange, routing keys per queue
    "task_queues": "topic",
    "task_default_queue": "default",
    "task_default_exchange": "tasks",
    "task_default_exchange_type": "topic",
    "task_default_routing_key": "task.default",
    "task_routes": {"feeds.tasks.*": {"queue": "feed_tasks", "routing_key": "feed.import"}},
}


@pytest.mark.parametrize("setup", ["defaults", "routing.rst", "named-exchanges"])
def test_destinations_match_celery(setup: str) -> None:
    import celery
    from kombu import Exchange, Queue

    settings: dict[str, Any] = {}
    if setup == "routing.rst":
        settings = {**ROUTING_RST}
        settings["task_queues"] = (
            Queue("default", routing_key="task.#"),
            Queue("feed_tasks", routing_key="feed.#"),
        )
    elif setup == "named-exchanges":
        settings["task_queues"] = (
            Queue("celery"),
            Queue("videos", Exchange("media", type="direct"), routing_key="media.video"),
            Queue("images", Exchange("media", type="direct"), routing_key="media.image"),
            Queue("broadcast", Exchange("all", type="fanout")),
        )
        settings["task_routes"] = {"video.*": {"queue": "videos"}, "all.*": "broadcast"}
    theirs = celery.Celery("r", set_as_current=False)
    theirs.conf.update(settings)
    ours = router(**settings)
    calls = [
        ("proj.add", {}),
        ("feeds.tasks.import_feed", {}),
        ("video.encode", {}),
        ("video.encode", {"routing_key": "media.image"}),
        ("all.ping", {}),
        ("proj.add", {"queue": "elsewhere"}),
        ("proj.add", {"queue": "default" if setup == "routing.rst" else "celery"}),
    ]
    for name, options in calls:
        route = ours.route(name, options)
        assert (route.queue, route.exchange, route.routing_key) == _celery_destination(
            theirs, name, options
        ), (name, options)


def test_a_missing_queue_is_refused_when_creation_is_off() -> None:
    from fastq.errors import QueueNotFound

    with pytest.raises(QueueNotFound, match="task_create_missing_queues is off"):
        router(task_create_missing_queues=False).route("x", {"queue": "nowhere"})
