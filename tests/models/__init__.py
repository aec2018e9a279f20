"""The task-progress models of the seed write-up: their properties and factories without a
database, and their column types (UTC timestamps, JSON) on both databases."""
