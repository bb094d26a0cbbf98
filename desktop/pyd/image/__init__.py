"""The guest image: build (guest-image/ recipe), cache, verify, fetch."""
