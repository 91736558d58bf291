"""``python -m tl.predict``: the door users type; the work is in ``tl.use.predict``."""
import sys

from tl.use.predict import main

if __name__ == "__main__":
    sys.exit(main())
