"""nta-harness: real traffic over veth, XDP metadata, and packet-buffer allocators."""

__version__ = "0.1.0"
