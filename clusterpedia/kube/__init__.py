"""Member-cluster access: credentials, discovery, list and watch (no operator or server logic)."""
