"""migrator: move a live MySQL/MariaDB database into MongoDB with zero downtime."""

__version__ = "0.1.0"
