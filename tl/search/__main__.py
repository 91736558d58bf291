"""``python -m tl.search SPACE.py [options]``: see ``tl.search.cli``."""
import sys

from tl.search.cli import main

sys.exit(main())
