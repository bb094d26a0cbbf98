"""File-change events for containers: host edits in the shares that running containers
bind-mount are replayed in the guest, so inotify watchers there fire (issue 19)."""
