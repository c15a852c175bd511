"""The bundle's entry point: ``opsmcp`` with the arguments the manifest passes (``serve``)."""

import os
import sys

from opsmcp.cli import main

if __name__ == "__main__":
    for name in ("AWS_PROFILE", "AWS_REGION"):  # an empty user_config field means "not set"
        if not os.environ.get(name):
            os.environ.pop(name, None)
    sys.exit(main())
