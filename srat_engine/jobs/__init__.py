"""Job control: detached workers, device slots, and how runs are launched and stopped."""
