"""SSH to the guest: paramiko with the guest's host key pinned."""
