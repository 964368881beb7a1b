"""``python -m dpo_hub.testing.hub``: run the local Hugging Face Hub compatible server."""

import sys

from .server import main

sys.exit(main())
