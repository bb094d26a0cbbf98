"""The guest's Docker engine as the host reaches it over SSH: HTTP on a channel to its
socket, /_ping, JSON GETs and the event stream."""
