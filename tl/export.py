"""``python -m tl.export``: the door users type; the work is in ``tl.use.export``."""
import sys

from tl.use.export import main

if __name__ == "__main__":
    sys.exit(main())
