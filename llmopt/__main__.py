"""``python -m llmopt``: the command line."""

import sys

from llmopt.cli import main

sys.exit(main())
