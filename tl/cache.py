"""``python -m tl.cache list|prune``: the door users type; the work is in ``tl.data.store.admin``."""
import sys

from tl.data.store.admin import main

if __name__ == "__main__":
    sys.exit(main())
