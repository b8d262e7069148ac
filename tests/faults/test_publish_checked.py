"""A publish that returns means the broker took the task; one it refused raises. On Redis the
LPUSH's reply is read (a server out of memory refuses it, a dead one does not answer); on
RabbitMQ the node-kill test of ``test_amqp_faults`` covers it with publisher confirms."""

from __future__ import annotations

import pytest
from fastq import App
from fastq.errors import BrokerError

from tests.faults.redis_server import RedisServer


@pytest.mark.parametrize("many", [False, True], ids=["delay", "send_many"])
def test_a_redis_publish_the_server_refuses_raises(own_redis: RedisServer, many: bool) -> None:
    client = App("client", broker=own_redis.url(0), set_as_current=False)
    try:
        client.send_task("faults.work", (0,))  # connected, binding recorded
        # Out of memory with no eviction: Redis refuses every write with an error reply.
        own_redis.client().config_set("maxmemory-policy", "noeviction")
        own_redis.client().config_set("maxmemory", 1)
        with pytest.raises(BrokerError, match=r"refused the publish.*maxmemory"):
            if many:
                client.send_many([("faults.work", (i,), None) for i in range(3)])
            else:
                client.send_task("faults.work", (1,))
        own_redis.client().config_set("maxmemory", 0)
        client.send_task("faults.work", (2,))
        assert own_redis.client().llen("celery") == 2
        own_redis.kill()
        with pytest.raises(BrokerError, match=f"127.0.0.1:{own_redis.port}"):
            client.send_task("faults.work", (3,))
    finally:
        client.close()
