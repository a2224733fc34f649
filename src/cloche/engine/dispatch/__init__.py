"""One handler per instruction family; each takes a StageState and returns the next one."""
