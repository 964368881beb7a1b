import sys

from dpo_hub.cli.main import main

sys.exit(main())
