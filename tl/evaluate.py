"""``python -m tl.evaluate``: the door users type; the work is in ``tl.use.evaluate``."""
import sys

from tl.use.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
