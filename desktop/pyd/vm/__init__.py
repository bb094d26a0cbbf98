"""The guest VM: its description (architecture, accelerator, machine settings) and the
backends that run it."""
