"""A userspace link emulator (namespaces, TUN devices, a Python forwarder) and its endpoints."""
