"""Run the gearsql command line as ``python -m gearsql``."""

from gearsql.cli import main

if __name__ == "__main__":
    main()
