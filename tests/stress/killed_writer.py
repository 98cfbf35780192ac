"""A writer process for the SIGKILL loop: ``python -m tests.stress.killed_writer SPEC SESSION TAG [RETRY...]``.

It first re-sends each ``RETRY`` id (the message a killed predecessor had in flight: it may
or may not have landed), then writes ``TAG-0``, ``TAG-1``, ... forever with thresholds that
commit and merge all the time, printing each id on its own line only after ``add_message``
returned: a complete line on stdout is an acknowledged, durable message.
"""

from __future__ import annotations

import sys

from ogmem_memory import SessionManager
from tests.stress.support import CHURN, Backend


def content_for(message_id: str) -> str:
    """The one text a message id is ever written with (a retry sends the same message)."""
    return f"{message_id} says the lisbon budget is {len(message_id) * 37} euros"


def role_for(message_id: str) -> str:
    return "user" if int(message_id.rsplit("-", 1)[1]) % 2 == 0 else "assistant"


def main(argv: list[str]) -> None:
    spec, session_id, tag, retries = argv[0], argv[1], argv[2], argv[3:]
    manager = SessionManager(Backend.from_spec(spec).open(), config=CHURN)
    for message_id in retries:
        manager.add_message(session_id, role_for(message_id), content_for(message_id), id=message_id)
        print(message_id, flush=True)
    i = 0
    while True:
        message_id = f"{tag}-{i}"
        manager.add_message(session_id, role_for(message_id), content_for(message_id), id=message_id)
        print(message_id, flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1:])
