"""Readers of list files, one module per format; `hashmatch.client.listfile` picks one."""
