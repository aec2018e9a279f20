"""Pydantic schemas of the HTTP API, split by direction: ``…Create``/``…Update`` come in,
``…Public`` go out. ORM rows are never returned as they are."""
