"""Notes printed at the end of the run under "postie interop notes" (fault-injection
statistics, timings and the like); conftest.py prints them."""

NOTES: list[str] = []


def note(msg: str) -> None:
    NOTES.append(msg)
    print(msg)
