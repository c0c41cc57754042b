"""What CKE would run and write on each node, rendered from the spec (§C.3, §C.4, §I)."""
