import sys

from dpo_hub.cli import main

sys.exit(main())
