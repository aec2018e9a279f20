"""Live delivery to open WebSockets: the per-process connection hub, and the fan-out that
carries frames from whoever produced them (a worker, a task update) to every API process."""
