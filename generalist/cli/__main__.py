"""`python -m generalist.cli` and `deepspeed --module generalist.cli`: the `generalist` command."""

import sys

from generalist.cli import main

sys.exit(main())
