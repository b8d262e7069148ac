import re

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
