"""Sends the example tasks to a running worker and prints what comes back."""

import time

from examples.tasks import add, divide, flaky, slow_square


def main() -> None:
    started = time.perf_counter()
    results = [add.delay(i, i) for i in range(5)]
    print("add:         ", [r.get(timeout=30) for r in results])
    squares = [slow_square.delay(i) for i in range(4)]
    print("slow_square: ", [r.get(timeout=30) for r in squares], "(4 x 0.2s on 2 processes)")
    print("flaky:       ", flaky.delay(1).get(timeout=30))
    failing = divide.delay(1, 0)
    try:
        failing.get(timeout=30)
    except ZeroDivisionError as exc:
        print(f"divide(1, 0): raised ZeroDivisionError({exc}) - state {failing.state}")
    print(f"done in {time.perf_counter() - started:.2f}s")


if __name__ == "__main__":
    main()
