"""Run moto's server with one fix: its receive checks each message's retention period by
recomputing *all* queue attributes (three scans of the whole queue per message received),
so receiving costs O(queue depth) per message whatever the batch size. This reads the one
attribute instead. Used by ``scripts/bench_redrive.py --moto-fix`` to show the mover's
figures on a backend whose receive cost does not grow with depth (as SQS's does not).

Usage: python scripts/moto_retention_fix.py -H 127.0.0.1 -p PORT (moto.server's arguments)
"""

from __future__ import annotations

from typing import Any

from moto.core.utils import unix_time
from moto.server import main
from moto.sqs.models import SQSBackend


def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
    """moto's check, reading ``MessageRetentionPeriod`` (seconds) without computing the other attributes."""
    retention = int(self.get_queue(queue_name).message_retention_period)
    return bool(retention + message.sent_timestamp / 1000 > unix_time())


SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
