"""``python -m tl.audit DATASET``: the door users type; the work is in ``tl.data.audit``."""
import sys

from tl.data.audit import main

if __name__ == "__main__":
    sys.exit(main())
