"""A notification's life: its statuses (``statuses``) and the state machine that moves them
(``machine``). Pure: nothing here does I/O (docs/architecture.md)."""
