"""Send a draft from another Python service, without HTTP.

    SECRET_KEY=… REDIS_URL=redis://127.0.0.1:6379/0 \\
        python docs/examples/enqueue_send.py SENDER_GUID MESSAGE_GUID [FYEO_PASSWORD]

Needs `securesend` installed (for the payload helper) and the same SECRET_KEY as the
workers, which seal and unseal the secret fields with a key derived from it.
"""

from __future__ import annotations

import json
import os
import sys

from celery import Celery

from worker.client import SEND_TASK, build_send_job, send_job_options


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    redis_url = os.environ["REDIS_URL"]
    app = Celery(broker=redis_url, backend=redis_url)
    payload = build_send_job(
        sender_guid=argv[1],
        message_guid=argv[2],
        password=argv[3] if len(argv) == 4 else "",
        notification_formats=["Text"],
        secret_key=os.environ["SECRET_KEY"],
    )
    result = app.send_task(SEND_TASK, args=[payload], **send_job_options(payload))
    answer = result.get(timeout=60)  # {"httpStatus": …, "response": {…SendMessage body…}}
    print(json.dumps(answer))
    return 0 if answer["httpStatus"] == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
