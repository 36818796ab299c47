"""`python -m ollabench.cli`: the same command as the `ollabench` entry point."""

import sys

from ollabench.cli import main

sys.exit(main())
